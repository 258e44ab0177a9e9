"""Frame helpers shared by the test scripts (flood.py, dhcp_flood.py, vlan_arp.py,
vlan_ping.py)."""
import socket
import struct

SOL_PACKET, PACKET_AUXDATA = 263, 8
TP_STATUS_VLAN_VALID = 0x10


def rmac(rnd):
    """A random unicast, locally administered MAC from `rnd` (a random.Random)."""
    b = bytearray(rnd.getrandbits(8) for _ in range(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return bytes(b)


def csum(b):
    """The Internet checksum of `b`."""
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return (~t) & 0xFFFF


def ipv4_udp(src, dst, sport, dport, payload):
    """An IPv4 header (checksummed) + UDP datagram (no UDP checksum) carrying `payload`."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst)
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + udp


def vlan_socket(iface):
    """An AF_PACKET socket bound to `iface` that reports stripped 802.1Q tags
    (PACKET_AUXDATA), and the interface's MAC as bytes."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((iface, 0))
    mac = open(f"/sys/class/net/{iface}/address").read().strip()
    return s, bytes.fromhex(mac.replace(":", ""))


def untag(data, anc):
    """(VLAN id or None, EtherType, payload) of a frame read with recvmsg from a
    vlan_socket: the tag from the auxiliary data (the kernel strips it) or in the
    frame itself."""
    tci = None
    for level, ty, blob in anc:
        if level == SOL_PACKET and ty == PACKET_AUXDATA and len(blob) >= 20:
            status, _, _, _, _, vtci, _ = struct.unpack("IIIHHHH", blob[:20])
            if status & TP_STATUS_VLAN_VALID or vtci:
                tci = vtci & 0x0FFF
    et = struct.unpack("!H", data[12:14])[0]
    body = data[14:]
    if et == 0x8100:
        tci = struct.unpack("!H", data[14:16])[0] & 0x0FFF
        et = struct.unpack("!H", data[16:18])[0]
        body = data[18:]
    return tci, et, body
