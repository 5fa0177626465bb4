# What `cmake --install` puts down for a host: the headers, liboutpost.so
# (component runtime) and, in component dev, its link name, liboutpost.a, the
# CMake package (OutpostConfig.cmake) and the pkg-config files. Included by
# api/CMakeLists.txt, which defines the libraries and OUTPOST_STATIC_PC_MODULES.
include(CMakePackageConfigHelpers)
set(_package_dir "${CMAKE_INSTALL_LIBDIR}/cmake/Outpost")
set(_pc_dir "${CMAKE_INSTALL_LIBDIR}/pkgconfig")

# The whole folder: every public header (*.hpp, *.h) is there.
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/outpost" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        COMPONENT dev FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h")
install(TARGETS outpost_shared EXPORT OutpostTargets
        LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT runtime NAMELINK_COMPONENT dev)
install(TARGETS outpost_static EXPORT OutpostStaticTargets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT dev)
# Two files, so that the config can leave the static target out when what
# it needs is missing on the host, without touching the shared one.
install(EXPORT OutpostTargets NAMESPACE Outpost:: DESTINATION "${_package_dir}" COMPONENT dev)
install(EXPORT OutpostStaticTargets NAMESPACE Outpost:: DESTINATION "${_package_dir}" COMPONENT dev)

list(JOIN OUTPOST_STATIC_PC_MODULES " " OUTPOST_PC_REQUIRES)
configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/OutpostConfig.cmake.in"
  "${CMAKE_CURRENT_BINARY_DIR}/OutpostConfig.cmake" INSTALL_DESTINATION "${_package_dir}")
# Before 1.0 a minor release may change the API and the ABI (the SONAME has
# the minor too): find_package(Outpost 0.2) takes 0.2.x, not 0.3.
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/OutpostConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/OutpostConfig.cmake" "${CMAKE_CURRENT_BINARY_DIR}/OutpostConfigVersion.cmake"
              "${CMAKE_CURRENT_LIST_DIR}/FindCAF.cmake"
        DESTINATION "${_package_dir}" COMPONENT dev)

# pkg-config: the prefix is found from the .pc file's own place, so the files
# stay right wherever `cmake --install --prefix` puts them.
file(RELATIVE_PATH _pc_prefix "/${_pc_dir}" "/")
string(REGEX REPLACE "/$" "" OUTPOST_PC_PREFIX "\${pcfiledir}/${_pc_prefix}")
# CAF has no .pc file (FindCAF.cmake): its library is named, with its folder
# when the linker would not look there by itself.
get_filename_component(_caf_dir "${CAF_CORE_LIBRARY}" DIRECTORY)
set(OUTPOST_PC_CAF "-lcaf_core")
if(NOT _caf_dir IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES)
  set(OUTPOST_PC_CAF "-L${_caf_dir} -lcaf_core")
endif()
foreach(_pc outpost outpost-static)
  configure_file("${CMAKE_CURRENT_LIST_DIR}/${_pc}.pc.in" "${CMAKE_CURRENT_BINARY_DIR}/${_pc}.pc" @ONLY)
  install(FILES "${CMAKE_CURRENT_BINARY_DIR}/${_pc}.pc" DESTINATION "${_pc_dir}" COMPONENT dev)
endforeach()
