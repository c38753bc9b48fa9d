// Package qemuqmp is kdstub's access to a QEMU guest: the Machine facade over the QMP client (qmp), the
// gdbstub client (rsp) and the RAM backends (ram), plus Start, which launches qemu-system-x86_64 for tests
// (qemutest), the fixture runner and the demo.
//
// It consumes sockets and QEMU 7.2's documented behaviour (../../shared/docs/qemu.md) and knows nothing about
// Windows: callers get registers, physical memory, run control, emulator-side breakpoints and stop events, and
// build the Windows view on top.
package qemuqmp
