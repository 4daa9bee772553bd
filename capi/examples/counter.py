#!/usr/bin/env python3
"""A shared counter from Python, through librmmap with ctypes.

    cargo build --release -p rmmap-c
    python3 capi/examples/counter.py 127.0.0.1:7878 counter.bin 1000

Adds 1 to the little-endian 64-bit word at offset 0 of PATH (created if
missing) INCREMENTS times with rmmap_fetch_add, which runs at the server, so
every process on every machine that does the same counts too. RMMAP_LIB
names the library (default: target/release/librmmap.so).
"""

import ctypes
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.environ.get("RMMAP_LIB", os.path.join(HERE, "..", "..", "target", "release", "librmmap.so"))

# From capi/include/rmmap.h.
RMMAP_OK = 0
RMMAP_MAP_READ_WRITE = 1
RMMAP_MAP_CREATE = 2

lib = ctypes.CDLL(LIB)
client_p = ctypes.c_void_p  # rmmap_client *, opaque
mapping_p = ctypes.c_void_p  # rmmap_mapping *, opaque
lib.rmmap_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(client_p)]
lib.rmmap_connect.restype = ctypes.c_int
lib.rmmap_map.argtypes = [client_p, ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64,
                          ctypes.c_uint32, ctypes.POINTER(mapping_p)]
lib.rmmap_map.restype = ctypes.c_int
lib.rmmap_fetch_add.argtypes = [mapping_p, ctypes.c_uint64, ctypes.c_uint64,
                                ctypes.POINTER(ctypes.c_uint64)]
lib.rmmap_fetch_add.restype = ctypes.c_int
lib.rmmap_read.argtypes = [mapping_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
lib.rmmap_read.restype = ctypes.c_int
lib.rmmap_sync.argtypes = [mapping_p]
lib.rmmap_sync.restype = ctypes.c_int
lib.rmmap_unmap.argtypes = [mapping_p]
lib.rmmap_unmap.restype = ctypes.c_int
lib.rmmap_close.argtypes = [client_p]
lib.rmmap_close.restype = ctypes.c_int
lib.rmmap_error_name.argtypes = [ctypes.c_int]
lib.rmmap_error_name.restype = ctypes.c_char_p
lib.rmmap_strerror_last.argtypes = []
lib.rmmap_strerror_last.restype = ctypes.c_char_p


class RmmapError(Exception):
    pass


def check(code, what):
    if code != RMMAP_OK:
        raise RmmapError("%s: %s: %s" % (what, lib.rmmap_error_name(code).decode(),
                                         lib.rmmap_strerror_last().decode()))


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: counter.py ADDR PATH INCREMENTS")
    addr, path, increments = sys.argv[1].encode(), sys.argv[2].encode(), int(sys.argv[3])
    client = client_p()
    check(lib.rmmap_connect(addr, None, ctypes.byref(client)), "connect")
    word = mapping_p()
    check(lib.rmmap_map(client, path, 0, 8, RMMAP_MAP_READ_WRITE | RMMAP_MAP_CREATE,
                        ctypes.byref(word)), "map")
    previous = ctypes.c_uint64()
    first = None
    for _ in range(increments):
        check(lib.rmmap_fetch_add(word, 0, 1, ctypes.byref(previous)), "fetch_add")
        if first is None:
            first = previous.value
    value = ctypes.c_uint64()
    check(lib.rmmap_read(word, 0, ctypes.byref(value), 8), "read")
    check(lib.rmmap_sync(word), "sync")
    check(lib.rmmap_unmap(word), "unmap")
    check(lib.rmmap_close(client), "close")
    print("counter: %s -> %d after %d increments from Python" % (first, value.value, increments))


if __name__ == "__main__":
    main()
