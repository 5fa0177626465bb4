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

#include <optional>
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

// What Velociraptor's path objects share: their components, `.Basename`,
// `.Dirname`, `.Components`, `p[i]`, `p[a:b]`, `p + x` (a string's parts as
// the path splits text, a path's components, a list's items verbatim). A
// path says how it splits text and makes a path like itself of other
// components.
class PathObject : public Object {
 public:
  explicit PathObject(std::vector<std::string> c) : c_(std::move(c)) {}
  const std::vector<std::string>& components() const { return c_; }
  const char* type() const override { return "path"; }
  bool truthy() const override { return !c_.empty(); }
  // Basename, Dirname and Components; nullopt for the others.
  std::optional<Value> member(std::string_view name) const override;
  Value index(int64_t i) const override;
  Value slice(std::optional<int64_t> from, std::optional<int64_t> to) const override;
  Value add(const Value& right) const override;

 protected:
  virtual std::vector<std::string> split(std::string_view text) const = 0;
  virtual Value with(std::vector<std::string> c) const = 0;
  std::vector<std::string> c_;
};

// A POSIX st_mode as Go's FileMode.
Value file_mode(mode_t st_mode);

}  // namespace outpost::vql
