// Velociraptor's objects in VQL (paths, file modes, lambdas) and the
// functions that make files (tempfile()), through the whole engine.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <kj/io.h>

#include "queries/engine.hpp"
#include "tests/vql_test_util.hpp"

namespace outpost::vql {
namespace {

std::vector<std::string> run(const std::string& vql) { return json_lines(run_rows(default_registry(), vql)); }

std::string one(const std::string& expr) {
  auto rows = run("SELECT " + expr + " AS X FROM scope()");
  if (rows.size() != 1) return "<" + std::to_string(rows.size()) + " rows>";
  return rows[0].substr(5, rows[0].size() - 6);  // {"X":...}
}

std::string error_of(const std::string& vql) {
  return error_of_run([&] { run(vql); });
}


TEST(VqlObjects, ATempFileLastsAsLongAsItsQuery) {
  auto rows = run("SELECT tempfile(data=['a', 'b']) AS Path, read_file(filename=tempfile(data='abc')) AS Text "
                  "FROM scope()");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_NE(rows[0].find("\"Text\":\"abc\""), std::string::npos) << rows[0];
  auto begin = rows[0].find("/"), end = rows[0].find('"', begin);
  std::string path = rows[0].substr(begin, end - begin);
  EXPECT_EQ(path.rfind("/outpost-tmp-", std::string::npos) != std::string::npos, true) << path;
  EXPECT_FALSE(std::filesystem::exists(path)) << path << " outlived its query";
}

TEST(VqlObjects, OneFilesystemDoesNotFollowALinkToAnother) {
  char tmpl[] = "/tmp/outpost-onefs-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::filesystem::path dir = tmpl;
  std::filesystem::create_directories(dir / "d");
  std::ofstream(dir / "d" / "version") << "here";
  std::filesystem::create_directory_symlink("/proc", dir / "proc");  // proc is another filesystem
  auto glob = [&](const std::string& extra) {
    return run("SELECT str(str=OSPath[-2:]) AS P FROM glob(globs='*/version', root='" + dir.string() + "'" + extra + ")");
  };
  EXPECT_EQ(glob(""), (std::vector<std::string>{"{\"P\":\"/d/version\"}", "{\"P\":\"/proc/version\"}"}));
  EXPECT_EQ(glob(", one_filesystem=TRUE"), (std::vector<std::string>{"{\"P\":\"/d/version\"}"}));
  EXPECT_EQ(glob(", nosymlink=TRUE"), (std::vector<std::string>{"{\"P\":\"/d/version\"}"}));
  std::filesystem::remove_all(dir);
}

// Sets inode flags on a file, and clears them when it goes, so that the
// test's directory can be removed whatever the test found.
class InodeFlags {
 public:
  InodeFlags(const std::string& path, unsigned flags) : fd_(::open(path.c_str(), O_RDONLY)) {
    unsigned old = 0;
    ok_ = fd_.get() >= 0 && ::ioctl(fd_, FS_IOC_GETFLAGS, &old) == 0 && (flags_ = old | flags, true) &&
          ::ioctl(fd_, FS_IOC_SETFLAGS, &flags_) == 0;
    flags_ = old;
  }
  ~InodeFlags() {
    if (ok_) ::ioctl(fd_, FS_IOC_SETFLAGS, &flags_);
  }
  bool ok() const { return ok_; }

 private:
  kj::AutoCloseFd fd_;
  unsigned flags_ = 0;
  bool ok_ = false;
};

TEST(VqlObjects, TheExt4AccessorShowsInodeFlags) {
  char tmpl[] = "/tmp/outpost-ext4-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::filesystem::path dir = tmpl;
  struct statfs fs;
  ASSERT_EQ(::statfs(tmpl, &fs), 0);
  if (fs.f_type != EXT4_SUPER_MAGIC) {
    std::filesystem::remove_all(dir);
    GTEST_SKIP() << "/tmp is not on ext2/3/4 here";
  }
  std::ofstream(dir / "locked") << "x";
  std::ofstream(dir / "open") << "y";
  {
    InodeFlags immutable((dir / "locked").string(), FS_IMMUTABLE_FL);
    if (!immutable.ok()) {
      std::filesystem::remove_all(dir);
      GTEST_SKIP() << "cannot set FS_IMMUTABLE_FL (needs CAP_LINUX_IMMUTABLE): " << std::strerror(errno);
    }
    auto rows = run("SELECT Name, Data.Uid AS Uid, Data.Inode > 0 AS HasInode FROM glob(globs='*', root='" +
                    dir.string() + "', accessor='ext4') WHERE Data.Flags =~ 'IMMUTABLE'");
    EXPECT_EQ(rows, (std::vector<std::string>{"{\"Name\":\"locked\",\"Uid\":" + std::to_string(::getuid()) +
                                               ",\"HasInode\":true}"}));
    EXPECT_EQ(one("stat(filename='" + (dir / "locked").string() + "', accessor='ext4').Data.Flags =~ 'IMMUTABLE'"),
              "true");
    // The file accessor's Data has no flags.
    EXPECT_EQ(run("SELECT Name FROM glob(globs='*', root='" + dir.string() + "') WHERE Data.Flags"),
              std::vector<std::string>{});
  }
  // Only ext2/3/4 files are seen through it, as Velociraptor's sees only those.
  EXPECT_EQ(one("stat(filename='/proc/version', accessor='ext4')"), "null");
  EXPECT_NE(error_of("SELECT * FROM glob(globs='*', accessor='ntfs')").find("\"ntfs\" is not supported: file, auto, ext4"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(VqlObjects, ALambdaIsCheckedWhereItIsUsed) {
  EXPECT_EQ(error_of("SELECT * FROM glob(globs='/nonexistent/*', recursion_callback='x')"),
            "glob(): recursion_callback: no => (a lambda is \"x => expression\"): x");
  EXPECT_EQ(error_of("SELECT * FROM glob(globs='/nonexistent/*', recursion_callback='1 => TRUE')"),
            "glob(): recursion_callback: \"1\" is not a parameter name (a lambda is \"x => expression\"): 1 => TRUE");
  EXPECT_EQ(error_of("SELECT * FROM glob(globs='/nonexistent/*', recursion_callback='x => (')"),
            "glob(): recursion_callback: expected an expression, found ')' (a lambda is \"x => expression\"): x => (");
  // The callback sees the query's variables and the directory's row.
  EXPECT_EQ(run("LET Deep = 'sbin' SELECT Name FROM glob(globs='/usr/*/ls', recursion_callback='x => NOT x.Name =~ Deep')"),
            (std::vector<std::string>{"{\"Name\":\"ls\"}"}));
}

TEST(VqlObjects, PathsAndModesReadAsVelociraptorsDo) {
  EXPECT_EQ(one("stat(filename='/').OSPath"), "\"/\"");
  EXPECT_EQ(one("stat(filename='/usr/bin').OSPath + 'ls'"), "\"/usr/bin/ls\"");
  EXPECT_EQ(one("(stat(filename='/usr/bin').OSPath + '../x/./y').Components"), "[\"usr\",\"bin\",\"x\",\"y\"]");
  EXPECT_EQ(one("stat(filename='/usr/bin').OSPath[5]"), "null");
  EXPECT_EQ(one("stat(filename='/usr/bin').OSPath = '/usr/bin'"), "true");
  EXPECT_EQ(one("stat(filename='/usr/bin').Mode.String"), "\"drwxr-xr-x\"");
  EXPECT_EQ(one("stat(filename='/usr/bin').Mode.Perm"), "493");
  EXPECT_EQ(one("stat(filename='/dev/null').Mode.String"), "\"Dcrw-rw-rw-\"");
  EXPECT_EQ(one("stat(filename='/dev/null').Mode.IsRegular"), "false");
}

TEST(VqlObjects, SetChangesADictForEveryHolderAsVelociraptorsDoes) {
  EXPECT_EQ(run("LET S <= dict(installed=FALSE) LET Install = set(item=S, field='installed', value=TRUE) "
                "SELECT S.installed AS Before, Install.installed AS Setting, S.installed AS After FROM scope()"),
            (std::vector<std::string>{"{\"Before\":false,\"Setting\":true,\"After\":true}"}));
  EXPECT_EQ(one("set(item='x', field='a', value=1)"), "null");  // not a dict: NULL (and a warning)
}

TEST(VqlObjects, UrlsAndHosts) {
  EXPECT_EQ(one("url(parse='HTTPS://u@example.com:8443/a/b?x=1#f')"),
            "{\"Scheme\":\"https\",\"User\":\"u\",\"Host\":\"example.com:8443\",\"Path\":\"/a/b\","
            "\"RawQuery\":\"x=1\",\"Fragment\":\"f\"}");
  EXPECT_EQ(one("url(parse='/just/a/path').Path"), "\"/just/a/path\"");
  EXPECT_EQ(one("url(scheme='https', host='h:1', path='/p', query=dict(a=1), fragment='z')"), "\"https://h:1/p?a=1#z\"");
  EXPECT_EQ(one("host(name='127.0.0.1')"), "[\"127.0.0.1\"]");
  EXPECT_NE(one("host(name='localhost')").find("127.0.0.1"), std::string::npos);
  EXPECT_EQ(one("host(name='no-such-host.invalid')"), "[]");
}

}  // namespace
}  // namespace outpost::vql
