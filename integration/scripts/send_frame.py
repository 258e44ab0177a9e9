"""Send one raw Ethernet frame, given as hex, COUNT times from IFACE (AF_PACKET).

usage: send_frame.py IFACE HEX [COUNT]   exit 0 when every send succeeded."""
import socket
import sys

iface, frame = sys.argv[1], bytes.fromhex(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for _ in range(count):
    s.send(frame)
