"""Frame-building helpers shared by the flood scripts (flood.py, dhcp_flood.py)."""
import struct


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
