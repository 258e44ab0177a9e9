//! Netdev ioctls: ifindex, flags (up, promiscuous), MTU; link facts (type, kind, master)
//! and deletion over route netlink.

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

/// Bring `name` administratively down (a veth's peer then loses its carrier).
pub fn set_down(name: &str) -> io::Result<()> {
    let sock = ctl_socket()?;
    let mut ifr = get_flags(&sock, name)?;
    // SAFETY: ifru_flags is the member SIOCGIFFLAGS filled.
    unsafe {
        if ifr.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short == 0 {
            return Ok(());
        }
        ifr.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
    }
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `name` is up with its carrier on; `NotFound`-like errors when the device is
/// gone. The carrier is the driver's own (ETHTOOL_GLINK), as it is now: IFF_RUNNING
/// follows the operstate, which the kernel's linkwatch updates up to a second late, so
/// a port that went up and down within that second would never be seen up. Drivers
/// without ETHTOOL_GLINK: IFF_RUNNING.
pub fn running(name: &str) -> io::Result<bool> {
    let sock = ctl_socket()?;
    let ifr = get_flags(&sock, name)?;
    // SAFETY: ifru_flags is the member SIOCGIFFLAGS filled.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short == 0 {
        return Ok(false);
    }
    /// `struct ethtool_value` (linux/ethtool.h).
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_GLINK: u32 = 0x0000_000a;
    let mut ev = EthtoolValue {
        cmd: ETHTOOL_GLINK,
        data: 0,
    };
    let mut ifr = ifreq_for(name)?;
    ifr.ifr_ifru.ifru_data = (&mut ev as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GLINK writes one ethtool_value through
    // ifru_data, which points at `ev`, alive and writable for the whole call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } < 0 {
        let want = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        return Ok(flags & want == want);
    }
    Ok(ev.data != 0)
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

/// ARPHRD_ETHER: an Ethernet-like device (veth, TAP, NIC, macvlan, ...).
pub const ARPHRD_ETHER: u16 = libc::ARPHRD_ETHER;
/// ARPHRD_LOOPBACK.
pub const ARPHRD_LOOPBACK: u16 = libc::ARPHRD_LOOPBACK;

/// What kind of device a netdev is, as far as deciding whether it can be a port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    /// Link-layer type (ARPHRD_*).
    pub hw_type: u16,
    /// IFF_LOOPBACK is set.
    pub loopback: bool,
    /// The rtnetlink kind (`veth`, `tun`, `bridge`, `bond`, ...); `None` for hardware.
    pub kind: Option<String>,
    /// The device this one is enslaved to (a kernel bridge or bond), by name.
    pub master: Option<String>,
    /// IFLA_LINK_NETNSID is present: the device's link (a veth's peer) lives in
    /// another network namespace than the one asking.
    pub link_in_other_netns: bool,
}

/// A readable name of an ARPHRD link type.
pub fn hw_type_name(t: u16) -> String {
    match t {
        libc::ARPHRD_ETHER => "ether".into(),
        libc::ARPHRD_LOOPBACK => "loopback".into(),
        libc::ARPHRD_NONE => "none (an L3 tunnel such as tun or wireguard)".into(),
        libc::ARPHRD_IPGRE => "gre".into(),
        libc::ARPHRD_TUNNEL => "ipip".into(),
        libc::ARPHRD_SIT => "sit".into(),
        libc::ARPHRD_TUNNEL6 => "ip6tnl".into(),
        libc::ARPHRD_INFINIBAND => "infiniband".into(),
        n => n.to_string(),
    }
}

fn route_socket() -> io::Result<OwnedFd> {
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
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Name of the netdev with `index`.
fn index_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8(bytes).ok()
}

/// Call `f(type, payload)` for each netlink attribute in `b` (len(2) type(2) payload,
/// padded to 4 bytes); stops at the first malformed one.
fn each_attr(mut b: &[u8], mut f: impl FnMut(u16, &[u8])) {
    const NLA_HDR: usize = 4;
    while b.len() >= NLA_HDR {
        let l = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let t = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if l < NLA_HDR || l > b.len() {
            break;
        }
        f(t, &b[NLA_HDR..l]);
        b = &b[((l + 3) & !3).min(b.len())..];
    }
}

/// Type, kind and master of netdev `name`, with one RTM_GETLINK.
pub fn link_info(name: &str) -> io::Result<LinkInfo> {
    link_info_index(ifindex(name)?)
}

/// [`link_info`] of the netdev with `index` (in the caller's namespace).
pub fn link_info_index(index: u32) -> io::Result<LinkInfo> {
    // ifinfomsg: family(1) pad(1) type(2) index(4) flags(4) change(4).
    const IFI_LEN: usize = 16;
    const IFLA_MASTER: u16 = 10;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_LINK_NETNSID: u16 = 37;
    const IFLA_INFO_KIND: u16 = 1;
    let hl = std::mem::size_of::<libc::nlmsghdr>();
    let mut req = vec![0u8; hl + IFI_LEN];
    req[0..4].copy_from_slice(&((hl + IFI_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[hl + 4..hl + 8].copy_from_slice(&(index as i32).to_ne_bytes());
    let sock = route_socket()?;
    // SAFETY: sends the bytes of a live buffer of the stated length.
    let rc = unsafe {
        libc::send(
            sock.as_raw_fd(),
            req.as_ptr() as *const libc::c_void,
            req.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
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
    let msg = &buf[..n as usize];
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short RTM_NEWLINK reply");
    let ty = msg.get(4..6).ok_or_else(bad)?;
    if u16::from_ne_bytes([ty[0], ty[1]]) == libc::NLMSG_ERROR as u16 {
        let e = msg.get(hl..hl + 4).ok_or_else(bad)?;
        let err = i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
        return Err(io::Error::from_raw_os_error(-err));
    }
    let ifi = msg.get(hl..hl + IFI_LEN).ok_or_else(bad)?;
    let flags = u32::from_ne_bytes([ifi[8], ifi[9], ifi[10], ifi[11]]);
    let mut info = LinkInfo {
        hw_type: u16::from_ne_bytes([ifi[2], ifi[3]]),
        loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
        ..Default::default()
    };
    let len = msg
        .get(0..4)
        .map(|l| u32::from_ne_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .ok_or_else(bad)?
        .min(msg.len());
    let mut master = None;
    let mut linkinfo: Option<Vec<u8>> = None;
    each_attr(
        msg.get(hl + IFI_LEN..len).unwrap_or_default(),
        |t, v| match t {
            IFLA_MASTER if v.len() >= 4 => {
                master = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
            }
            IFLA_LINKINFO => linkinfo = Some(v.to_vec()),
            IFLA_LINK_NETNSID => info.link_in_other_netns = true,
            _ => {}
        },
    );
    if let Some(li) = linkinfo {
        let mut kind = None;
        each_attr(&li, |t, v| {
            if t == IFLA_INFO_KIND {
                let s: Vec<u8> = v.iter().copied().take_while(|c| *c != 0).collect();
                kind = String::from_utf8(s).ok();
            }
        });
        info.kind = kind;
    }
    info.master = master
        .filter(|m| *m != 0)
        .map(|m| index_name(m).unwrap_or_else(|| format!("ifindex {m}")));
    Ok(info)
}

/// Append netlink attribute `ty` with `payload` to `b` (padded to 4 bytes).
fn push_attr(b: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(payload);
    b.resize((b.len() + 3) & !3, 0);
}

/// Append a nested attribute `ty` whose payload `f` writes.
fn push_nested(b: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = b.len();
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(ty | libc::NLA_F_NESTED as u16).to_ne_bytes());
    f(b);
    let len = (b.len() - start) as u16;
    b[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// Create a collect-metadata (`external`) VXLAN device `name` receiving on UDP
/// `dst_port` (no learning: the fast path sets every tunnel key), as `ip link add NAME
/// type vxlan external dstport PORT nolearning` would; returns its ifindex. The device
/// is left down.
pub fn create_vxlan_external(name: &str, dst_port: u16) -> io::Result<u32> {
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const IFLA_VXLAN_LEARNING: u16 = 7;
    const IFLA_VXLAN_PORT: u16 = 15;
    const IFLA_VXLAN_COLLECT_METADATA: u16 = 25;
    const IFI_LEN: usize = 16;
    if !valid_ifname(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name: {name:?}"),
        ));
    }
    let hl = std::mem::size_of::<libc::nlmsghdr>();
    let mut req = vec![0u8; hl + IFI_LEN];
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    push_attr(&mut req, IFLA_IFNAME, &ifname);
    push_nested(&mut req, IFLA_LINKINFO, |b| {
        push_attr(b, IFLA_INFO_KIND, b"vxlan\0");
        push_nested(b, IFLA_INFO_DATA, |b| {
            push_attr(b, IFLA_VXLAN_LEARNING, &[0]);
            push_attr(b, IFLA_VXLAN_PORT, &dst_port.to_be_bytes());
            push_attr(b, IFLA_VXLAN_COLLECT_METADATA, &[1]);
        });
    });
    let total = req.len() as u32;
    req[0..4].copy_from_slice(&total.to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL;
    req[6..8].copy_from_slice(&(flags as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[hl] = libc::AF_UNSPEC as u8;
    let sock = route_socket()?;
    // SAFETY: sends the bytes of a live buffer of the stated length.
    let rc = unsafe {
        libc::send(
            sock.as_raw_fd(),
            req.as_ptr() as *const libc::c_void,
            req.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 1024];
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
    let n = n as usize;
    if n >= hl + 4 && u16::from_ne_bytes([buf[4], buf[5]]) == libc::NLMSG_ERROR as u16 {
        let err = i32::from_ne_bytes([buf[hl], buf[hl + 1], buf[hl + 2], buf[hl + 3]]);
        if err != 0 {
            return Err(io::Error::from_raw_os_error(-err));
        }
    }
    ifindex(name)
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

    #[test]
    fn loopback_link_info() {
        let lo = link_info("lo").unwrap();
        assert!(lo.loopback);
        assert_eq!(lo.hw_type, ARPHRD_LOOPBACK);
        assert_eq!(lo.master, None);
        assert!(link_info("no-such-dev-x").is_err());
    }
}
