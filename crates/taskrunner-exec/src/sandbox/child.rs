//! What runs in the forked child between `fork` and `exec` (the `pre_exec` hook): joining the
//! attempt's cgroups, resource limits, the network namespace, closing inherited descriptors,
//! dropping capabilities and the Landlock restriction.
//!
//! Everything here is prepared in the parent ([`ChildSetup`] holds only pre-built C strings,
//! numbers and descriptors) so the child performs plain system calls: no allocation, no locks
//! (the parent is multi-threaded, so the child may only do async-signal-safe work).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Everything the child does before `exec`, in this order.
#[derive(Debug, Default)]
pub(crate) struct ChildSetup {
    /// `cgroup.procs` files the child writes `0` (itself) into.
    pub(crate) cgroup_procs: Vec<CString>,
    /// `(resource, limit)` pairs for `setrlimit` (soft = hard = limit).
    pub(crate) rlimits: Vec<(RlimitResource, u64)>,
    /// Enter a new network namespace with only loopback (up).
    pub(crate) new_network: bool,
    /// For an unprivileged host: also a new user namespace mapping the caller's uid/gid to
    /// root inside it (needed to create the network namespace without privileges).
    pub(crate) user_namespace: Option<UserMapping>,
    /// Mark every descriptor above stderr close-on-exec.
    pub(crate) close_fds: bool,
    /// Drop every capability (bounding, inheritable, effective, permitted, ambient).
    pub(crate) drop_capabilities: bool,
    /// Set `no_new_privs` (always when Landlock is applied).
    pub(crate) no_new_privs: bool,
    /// A Landlock ruleset to restrict the child to.
    pub(crate) landlock: Option<OwnedFd>,
}

/// The `setrlimit` resources we use.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RlimitResource {
    Core,
    NoFile,
    AddressSpace,
}

/// `uid_map`/`gid_map` contents, prepared in the parent.
#[derive(Debug)]
pub(crate) struct UserMapping {
    pub(crate) uid_map: Vec<u8>,
    pub(crate) gid_map: Vec<u8>,
}

const UID_MAP: &[u8] = b"/proc/self/uid_map\0";
const GID_MAP: &[u8] = b"/proc/self/gid_map\0";
const SETGROUPS: &[u8] = b"/proc/self/setgroups\0";
/// `LANDLOCK_CREATE_RULESET_VERSION`.
const LANDLOCK_VERSION_FLAG: libc::c_uint = 1;
/// `CLOSE_RANGE_CLOEXEC`.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
/// Highest capability number we try to drop from the bounding set.
const CAP_LAST_MAX: libc::c_ulong = 63;

impl ChildSetup {
    /// Runs in the child. Only system calls on data prepared in the parent.
    pub(crate) fn apply(&self) -> io::Result<()> {
        for path in &self.cgroup_procs {
            write_file(path.as_bytes_with_nul(), b"0")?;
        }
        for (resource, limit) in &self.rlimits {
            set_rlimit(*resource, *limit)?;
        }
        if let Some(mapping) = &self.user_namespace {
            unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET)?;
            // `deny` first, or writing gid_map is refused to an unprivileged process.
            write_file(SETGROUPS, b"deny")?;
            write_file(UID_MAP, &mapping.uid_map)?;
            write_file(GID_MAP, &mapping.gid_map)?;
            loopback_up()?;
        } else if self.new_network {
            unshare(libc::CLONE_NEWNET)?;
            loopback_up()?;
        }
        if self.close_fds {
            close_range_cloexec()?;
        }
        if self.drop_capabilities {
            drop_capabilities()?;
        }
        if self.no_new_privs || self.landlock.is_some() {
            no_new_privs()?;
        }
        if let Some(ruleset) = &self.landlock {
            landlock_restrict_self(ruleset.as_raw_fd())?;
        }
        Ok(())
    }
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes `bytes` to the file at `path` (NUL-terminated) in one `write`.
fn write_file(path: &[u8], bytes: &[u8]) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `path` is NUL-terminated (a `CString`'s bytes or a `\0`-terminated constant);
    // `open`, `write` and `close` are async-signal-safe and only read the given buffers.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        let error = io::Error::last_os_error();
        libc::close(fd);
        if written < 0 {
            return Err(error);
        }
    }
    Ok(())
}

fn set_rlimit(resource: RlimitResource, limit: u64) -> io::Result<()> {
    let resource = match resource {
        RlimitResource::Core => libc::RLIMIT_CORE,
        RlimitResource::NoFile => libc::RLIMIT_NOFILE,
        RlimitResource::AddressSpace => libc::RLIMIT_AS,
    };
    let value = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    #[allow(unsafe_code)]
    // SAFETY: `setrlimit` reads the struct we pass by reference; async-signal-safe.
    let result = unsafe { libc::setrlimit(resource, &value) };
    check(result)
}

fn unshare(flags: libc::c_int) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `unshare` takes flags only; async-signal-safe.
    let result = unsafe { libc::unshare(flags) };
    check(result)
}

/// Brings `lo` up in the (new) network namespace: `SIOCGIFFLAGS`, set `IFF_UP`, `SIOCSIFFLAGS`.
fn loopback_up() -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: a zeroed `ifreq` is a valid value; the name is copied within `IFNAMSIZ`; the
    // ioctls read/write only that struct; `socket`/`ioctl`/`close` are async-signal-safe.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut request) < 0 {
            let error = io::Error::last_os_error();
            libc::close(sock);
            return Err(error);
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let result = libc::ioctl(sock, libc::SIOCSIFFLAGS, &request);
        let error = io::Error::last_os_error();
        libc::close(sock);
        if result < 0 {
            return Err(error);
        }
    }
    Ok(())
}

fn close_range_cloexec() -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)` only sets flags on descriptors.
    let result = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's `cap_user_header_t` / `cap_user_data_t` (version 3: two data words).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn drop_capabilities() -> io::Result<()> {
    for cap in 0..=CAP_LAST_MAX {
        #[allow(unsafe_code)]
        // SAFETY: `prctl(PR_CAPBSET_DROP, cap)` takes integers only.
        let result = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        // EINVAL: no such capability on this kernel (past the last one); EPERM: we never
        // had CAP_SETPCAP (an unprivileged host), so there is nothing to drop from.
        if result == -1 {
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::EPERM) => break,
                _ => return Err(error),
            }
        }
    }
    #[allow(unsafe_code)]
    // SAFETY: clears the ambient set; integers only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    #[allow(unsafe_code)]
    // SAFETY: `capset` reads a version-3 header and two data words, which we pass.
    let result = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn no_new_privs() -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: integers only.
    let result = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(result)
}

fn landlock_restrict_self(ruleset: libc::c_int) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `landlock_restrict_self(fd, 0)` takes a descriptor we own and flags.
    let result = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The Landlock ABI version the kernel supports (`None`: not compiled in or disabled).
pub(crate) fn landlock_abi() -> Option<u32> {
    #[allow(unsafe_code)]
    // SAFETY: `landlock_create_ruleset(NULL, 0, VERSION)` only returns a number.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0_usize,
            LANDLOCK_VERSION_FLAG,
        )
    };
    u32::try_from(version).ok().filter(|v| *v > 0)
}

/// True when the kernel has `close_range` with `CLOSE_RANGE_CLOEXEC` (Linux 5.11): probed on
/// an empty range far above any open descriptor.
pub(crate) fn close_range_supported() -> bool {
    let far: libc::c_uint = 1 << 30;
    #[allow(unsafe_code)]
    // SAFETY: marks descriptors in a range where none are open; changes nothing.
    let result = unsafe { libc::syscall(libc::SYS_close_range, far, far, CLOSE_RANGE_CLOEXEC) };
    result == 0
}
