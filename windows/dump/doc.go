// Package dump reads and writes 64-bit Windows kernel crash dumps (the DUMP_HEADER64 "PAGEDU64" family).
//
// kdstub can stand a crash dump in for a live guest: full and bitmap dumps hold guest-physical pages and serve
// ReadPhysical, so the same paging and discovery code that runs on QEMU runs on them; triage dumps hold only a
// few virtual-address-tagged fragments (the KDBG copy, the crashing KPRCB/EPROCESS/ETHREAD, the stack, data
// blocks, a driver list), so they serve ReadVirtual and Triage instead. The writer exists so the physical
// layouts can be tested by round trip and so a later `.dump` can write them.
//
// Everything read from the file is untrusted: offsets are bounds-checked against the file size, counts are
// clamped, and malformed input yields errors wrapping ErrFormat rather than panics.
//
// Layout sources (public): rizin librz/bin/format/dmp/dmp_specs.h, kdmp-parser (0vercl0k), rekall's
// crashdump overlay, and the Microsoft DUMP_HEADER64 description; each offset is named next to its constant.
package dump
