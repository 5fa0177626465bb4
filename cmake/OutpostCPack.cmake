# `cpack -G DEB` in the build directory: two packages, installed under /usr.
#   outpost      liboutpost.so.0.2 (component runtime) and the programs
#                (outpost-agent, outpost-collector, outpostctl, outpost-bench)
#   outpost-dev  the headers, the liboutpost.so link, liboutpost.a, the CMake
#                package and the pkg-config files (component dev)
set(CPACK_PACKAGE_NAME outpost)
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Endpoint-monitoring agent, its collector and the agent as a library")
set(CPACK_PACKAGE_CONTACT "Outpost maintainers")  # a .deb must name a maintainer
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)  # the build has debug information (RelWithDebInfo)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ONE_PER_GROUP)
set(CPACK_COMPONENT_RUNTIME_GROUP outpost)
set(CPACK_COMPONENT_UNSPECIFIED_GROUP outpost)  # the programs' install() names no component
set(CPACK_COMPONENT_DEV_GROUP outpost-dev)
set(CPACK_DEBIAN_OUTPOST_PACKAGE_NAME outpost)
set(CPACK_DEBIAN_OUTPOST-DEV_PACKAGE_NAME outpost-dev)
set(CPACK_DEBIAN_OUTPOST-DEV_PACKAGE_DEPENDS "outpost (= ${PROJECT_VERSION})")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # Depends from what the binaries link (dpkg-shlibdeps)
include(CPack)
