#!/usr/bin/env python3
"""Fallback 64-byte UDP generator for benches/e2e/run.sh when trafgen is not installed.

Sends one fixed 60-byte Ethernet/IPv4/UDP frame (64 bytes on the wire with the FCS)
from DEV as fast as one Python thread can, through an AF_PACKET socket with
PACKET_QDISC_BYPASS, until COUNT frames or SECONDS have passed, whichever is first.
Counting is left to the kernel's interface counters; run it inside the sender's
namespace (ip netns exec).

    udpgen.py DEV DST_MAC SRC_MAC SRC_IP DST_IP COUNT SECONDS
"""
import socket
import struct
import sys
import time

SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str) -> bytes:
    payload = bytes(18)
    udp_len = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", 9999, 9, udp_len, 0)  # checksum 0: none (IPv4)
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    f = eth + ip + udp + payload
    assert len(f) == 60
    return f


def main() -> None:
    dev, dst_mac, src_mac, src_ip, dst_ip, count, seconds = sys.argv[1:8]
    count, seconds = int(count), float(seconds)
    f = frame(dst_mac, src_mac, src_ip, dst_ip)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    except OSError:
        pass
    s.bind((dev, 0))
    send = s.send
    deadline = time.monotonic() + seconds
    n = 0
    while n < count and time.monotonic() < deadline:
        for _ in range(min(1024, count - n)):
            try:
                send(f)
            except OSError:  # ENOBUFS when the peer's backlog is full: counted as tx_dropped
                pass
        n += 1024


if __name__ == "__main__":
    main()
