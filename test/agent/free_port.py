#!/usr/bin/env python3
"""Prints a free TCP port on 127.0.0.1 in [LOW, HIGH] (default 47100-47199), starting at a random one."""
import random
import socket
import sys

low, high = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (47100, 47199)
ports = list(range(low, high + 1))
random.shuffle(ports)
for p in ports:
    s = socket.socket()
    try:
        s.bind(('127.0.0.1', p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    sys.exit(0)
sys.exit('no free port in %d-%d' % (low, high))
