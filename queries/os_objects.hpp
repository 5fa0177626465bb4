#pragma once
// Velociraptor's OSPath and FileMode as VQL objects, for the rows of glob()
// and stat() and the path functions.
//
// A path: `.Basename` (string), `.Dirname` (path), `.Components`, `.Path`
// and `.String` (strings); `p[i]` a component (negative from the end),
// `p[a:b]` a path of those components, `p + "x/y"` a path with those
// components appended; JSON and str() give "/a/b".
// A mode: Go's os.FileMode bits (a number in JSON, as Velociraptor writes
// it); `.String` as Go writes it ("drwxr-xr-x", "urwxr-xr-x" for setuid),
// `.IsDir`, `.IsRegular`, `.IsLink`, `.Perm`, `.Type`.

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "queries/value.hpp"

namespace outpost::vql {

// A Linux path: split on '/', empty components, "." and ".." dropped (not
// resolved), as Velociraptor's file accessor parses one.
Value os_path(std::string_view text);
Value os_path(std::vector<std::string> components);
// A path's components; null when `v` is not a path.
const std::vector<std::string>* path_components(const Value& v);

// A POSIX st_mode as Go's FileMode.
Value file_mode(mode_t st_mode);

}  // namespace outpost::vql
