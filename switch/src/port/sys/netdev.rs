//! Netdev ioctls: ifindex, flags (up, promiscuous), MTU.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Whether `name` is acceptable to the kernel as an interface name.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

pub(crate) fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    if !valid_ifname(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name: {name:?}"),
        ));
    }
    // SAFETY: ifreq is a plain C struct; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// Kernel ifindex of `name`; `NotFound` if there is no such device.
pub fn ifindex(name: &str) -> io::Result<u32> {
    if !valid_ifname(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::from_raw_os_error(libc::ENODEV))
    } else {
        Ok(idx)
    }
}

fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned on success.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn get_flags(sock: &OwnedFd, name: &str) -> io::Result<libc::ifreq> {
    let mut ifr = ifreq_for(name)?;
    // SAFETY: SIOCGIFFLAGS reads into ifr, which is a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ifr)
}

/// Bring `name` administratively up.
pub fn set_up(name: &str) -> io::Result<()> {
    let sock = ctl_socket()?;
    let mut ifr = get_flags(&sock, name)?;
    // SAFETY: ifru_flags is the member SIOCGIFFLAGS filled.
    unsafe {
        if ifr.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0 {
            return Ok(());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `name` is up with its carrier on (IFF_UP and IFF_RUNNING); `NotFound`-like
/// errors when the device is gone.
pub fn running(name: &str) -> io::Result<bool> {
    let sock = ctl_socket()?;
    let ifr = get_flags(&sock, name)?;
    let want = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: ifru_flags is the member SIOCGIFFLAGS filled.
    Ok(unsafe { ifr.ifr_ifru.ifru_flags } & want == want)
}

/// Set the MTU of `name`.
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let sock = ctl_socket()?;
    let mut ifr = ifreq_for(name)?;
    ifr.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    // SAFETY: SIOCSIFMTU reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Delete the netdev with `ifindex` (and, for a veth, its peer) with one
/// RTM_DELLINK on a route netlink socket, waiting for the kernel's acknowledgement.
pub fn delete(ifindex: u32) -> io::Result<()> {
    #[repr(C)]
    struct Req {
        nh: libc::nlmsghdr,
        ifi: IfInfoMsg,
    }
    #[repr(C)]
    struct IfInfoMsg {
        family: u8,
        pad: u8,
        kind: u16,
        index: i32,
        flags: u32,
        change: u32,
    }
    // SAFETY: plain socket(2); the fd is owned on success.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let req = Req {
        nh: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<Req>() as u32,
            nlmsg_type: libc::RTM_DELLINK,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        ifi: IfInfoMsg {
            family: libc::AF_UNSPEC as u8,
            pad: 0,
            kind: 0,
            index: ifindex as i32,
            flags: 0,
            change: 0,
        },
    };
    // SAFETY: sends the bytes of a live, fully initialised repr(C) struct.
    let rc = unsafe {
        libc::send(
            sock.as_raw_fd(),
            &req as *const Req as *const libc::c_void,
            std::mem::size_of::<Req>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 256];
    // SAFETY: receives into a live buffer of the stated size.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // An NLMSG_ERROR carries a negative errno, or 0 for the acknowledgement.
    let n = n as usize;
    let hl = std::mem::size_of::<libc::nlmsghdr>();
    if n >= hl + 4 {
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if ty == libc::NLMSG_ERROR as u16 {
            let err = i32::from_ne_bytes([buf[hl], buf[hl + 1], buf[hl + 2], buf[hl + 3]]);
            if err != 0 {
                return Err(io::Error::from_raw_os_error(-err));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_ifname("veth1"));
        assert!(valid_ifname("abcdefghijklmno"));
        assert!(!valid_ifname("abcdefghijklmnop"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("a b"));
        assert!(ifindex("no-such-dev-x").is_err());
        assert!(ifindex("lo").is_ok());
    }
}
