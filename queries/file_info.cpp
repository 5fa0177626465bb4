// A file's row as Velociraptor's glob() and stat() give it: Name, OSPath,
// Mtime, Atime, Ctime, Btime, Size, Mode (Go's FileMode), IsDir, IsLink,
// Data {Link, DevMajor, DevMinor, FSType}; then Sys (the stat fields,
// which Velociraptor's glob rows leave NULL) and FullPath (the path as a
// string, Velociraptor's deprecated name).

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include <cstdio>

#include "queries/linux_util.hpp"
#include "queries/os_objects.hpp"

namespace outpost::vql {
namespace {

constexpr int64_t kNsPerSec = 1'000'000'000;
Timestamp timestamp(int64_t sec, int64_t nsec) { return {sec * kNsPerSec + nsec}; }

// As Velociraptor names filesystems (ext2/3/4 share a magic: "ext2").
std::string fs_name(int64_t magic) {
  switch (static_cast<uint64_t>(magic) & 0xffffffffu) {
    case EXT2_SUPER_MAGIC: return "ext2";
    case TMPFS_MAGIC: return "tmpfs";
    case PROC_SUPER_MAGIC: return "proc";
    case SYSFS_MAGIC: return "sysfs";
    case XFS_SUPER_MAGIC: return "xfs";
    case BTRFS_SUPER_MAGIC: return "btrfs";
    case OVERLAYFS_SUPER_MAGIC: return "overlayfs";
    case NFS_SUPER_MAGIC: return "nfs";
    case MSDOS_SUPER_MAGIC: return "msdos";
    case DEVPTS_SUPER_MAGIC: return "devpts";
    case CGROUP2_SUPER_MAGIC: return "cgroup2";
    case CGROUP_SUPER_MAGIC: return "cgroup";
    case SQUASHFS_MAGIC: return "squashfs";
    case 0x65735546: return "fuse";
    case 0x2fc12fc1: return "zfs";
    case RAMFS_MAGIC: return "ramfs";
    case ISOFS_SUPER_MAGIC: return "isofs";
    case SECURITYFS_MAGIC: return "securityfs";
    case DEBUGFS_MAGIC: return "debugfs";
    case 0x6e736673: return "nsfs";
    case BPF_FS_MAGIC: return "bpf";
    default: {
      char buf[16];
      std::snprintf(buf, sizeof buf, "0x%08x", static_cast<unsigned>(magic));
      return buf;
    }
  }
}

// The inode flags' names, as the kernel's FS_*_FL constants name them.
constexpr std::pair<unsigned, const char*> kInodeFlags[] = {
    {FS_SECRM_FL, "SECRM"},         {FS_UNRM_FL, "UNRM"},
    {FS_COMPR_FL, "COMPR"},         {FS_SYNC_FL, "SYNC"},
    {FS_IMMUTABLE_FL, "IMMUTABLE"}, {FS_APPEND_FL, "APPEND"},
    {FS_NODUMP_FL, "NODUMP"},       {FS_NOATIME_FL, "NOATIME"},
    {FS_DIRTY_FL, "DIRTY"},         {FS_COMPRBLK_FL, "COMPRBLK"},
    {FS_NOCOMP_FL, "NOCOMP"},       {FS_ENCRYPT_FL, "ENCRYPT"},
    {FS_INDEX_FL, "INDEX"},         {FS_IMAGIC_FL, "IMAGIC"},
    {FS_JOURNAL_DATA_FL, "JOURNAL_DATA"}, {FS_NOTAIL_FL, "NOTAIL"},
    {FS_DIRSYNC_FL, "DIRSYNC"},     {FS_TOPDIR_FL, "TOPDIR"},
    {FS_HUGE_FILE_FL, "HUGE_FILE"}, {FS_EXTENT_FL, "EXTENTS"},
    {FS_VERITY_FL, "VERITY"},       {FS_EA_INODE_FL, "EA_INODE"},
    {FS_DAX_FL, "DAX"},             {FS_INLINE_DATA_FL, "INLINE_DATA"},
    {FS_PROJINHERIT_FL, "PROJINHERIT"}, {FS_CASEFOLD_FL, "CASEFOLD"},
};

// A regular file's or directory's inode flags; none for the others (a
// device is not opened: opening one may act on it) or when they cannot be read.
List inode_flags(const std::string& path, const struct stat& st) {
  List names;
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return names;
  kj::AutoCloseFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
  if (fd == nullptr) return names;
  unsigned flags = 0;
  int rc = ::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags);
  close_file(fd);  // read: a close error adds nothing
  if (rc != 0) return names;
  for (auto& [bit, name] : kInodeFlags)
    if (flags & bit) names.push_back(name);
  return names;
}

}  // namespace

std::string FsTypes::of(const std::string& path, dev_t dev) {
  auto it = names_.find(dev);
  if (it != names_.end()) return it->second;
  struct statfs fs;
  if (::statfs(path.c_str(), &fs) != 0) return "";  // a link to nowhere: not cached
  if (names_.size() > 1000) names_.clear();
  return names_.emplace(dev, fs_name(fs.f_type)).first->second;
}

Row file_info_row(const std::string& path, std::string_view name, const struct stat& st, FsTypes& fs_types) {
  Row row;
  row.set("Name", name);
  row.set("OSPath", os_path(path));
  row.set("Mtime", timestamp(st.st_mtim.tv_sec, st.st_mtim.tv_nsec));
  row.set("Atime", timestamp(st.st_atim.tv_sec, st.st_atim.tv_nsec));
  row.set("Ctime", timestamp(st.st_ctim.tv_sec, st.st_ctim.tv_nsec));
  struct statx sx;
  Timestamp btime{};  // the zero time where the filesystem does not keep one
  if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BTIME, &sx) == 0 && (sx.stx_mask & STATX_BTIME))
    btime = timestamp(sx.stx_btime.tv_sec, sx.stx_btime.tv_nsec);
  row.set("Btime", btime);
  row.set("Size", int64_t{st.st_size});
  row.set("Mode", file_mode(st.st_mode));
  row.set("IsDir", S_ISDIR(st.st_mode));
  row.set("IsLink", S_ISLNK(st.st_mode));
  Dict data;
  if (S_ISLNK(st.st_mode)) {
    std::string target(4096, '\0');
    ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
    if (n >= 0) data.set("Link", target.substr(0, static_cast<size_t>(n)));
  }
  data.set("DevMajor", int64_t{major(st.st_dev)});
  data.set("DevMinor", int64_t{minor(st.st_dev)});
  data.set("FSType", fs_types.of(path, st.st_dev));
  row.set("Data", std::move(data));
  Dict sys;
  sys.set("Dev", Value(uint64_t{st.st_dev}));
  sys.set("Ino", Value(uint64_t{st.st_ino}));
  sys.set("Nlink", Value(uint64_t{st.st_nlink}));
  sys.set("Mode", int64_t{st.st_mode});
  sys.set("Uid", int64_t{st.st_uid});
  sys.set("Gid", int64_t{st.st_gid});
  sys.set("Rdev", Value(uint64_t{st.st_rdev}));
  sys.set("Size", int64_t{st.st_size});
  sys.set("Blksize", int64_t{st.st_blksize});
  sys.set("Blocks", int64_t{st.st_blocks});
  row.set("Sys", std::move(sys));
  row.set("FullPath", path);
  return row;
}

std::optional<Row> ext4_info_row(const std::string& path, std::string_view name, const struct stat& st,
                                 FsTypes& fs_types) {
  if (fs_types.of(path, st.st_dev) != "ext2") return std::nullopt;  // ext2, 3 and 4 share the magic
  Row row = file_info_row(path, name, st, fs_types);
  Dict data;
  data.set("Inode", Value(uint64_t{st.st_ino}));
  data.set("Uid", int64_t{st.st_uid});
  data.set("Gid", int64_t{st.st_gid});
  List flags = inode_flags(path, st);
  if (!flags.empty()) data.set("Flags", std::move(flags));
  row.set("Data", std::move(data));
  return row;
}

}  // namespace outpost::vql
