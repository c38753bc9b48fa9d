// Package dump reads and writes 64-bit Windows kernel crash dumps (the DUMP_HEADER64 "PAGEDU64" family).
//
// kdstub can stand a crash dump in for a live guest: full and bitmap dumps hold guest-physical pages and serve
// ReadPhysical, so the same paging and discovery code that runs on QEMU runs on them; triage dumps hold only a
// few virtual-address-tagged fragments (the KDBG copy, the crashing KPRCB/EPROCESS/ETHREAD, the stack, data
// blocks, a driver list), so they serve ReadVirtual and Triage instead. The writer exists so the physical
// layouts can be tested by round trip and so a later `.dump` can write them.
//
// Layouts: DumpType 1 (full: PHYSICAL_MEMORY_DESCRIPTOR runs, pages right after the header), 2/5/6 with an
// "SDMP"/"FDMP" bitmap at 0x2000, and 4 (triage). Header-only dumps open but hold no memory; the Windows 11
// "RDMP" layouts (DumpType 8/9/10) and 32-bit PAGEDUMP files are refused with ErrUnsupported.
//
// For kernel-object code: Triage().KDBG and Triage().Process give the decoded KDBG and the crashing thread's
// EPROCESS (System in the shared 19041 dump) with their VAs; File satisfies both the PhysicalMemory and the
// VirtualMemory shapes (ReadPhysical / ReadVirtual with a context) that windows/ consumes.
//
// Everything read from the file is untrusted: offsets are bounds-checked against the file size, counts are
// clamped, and malformed input yields errors wrapping ErrFormat rather than panics.
//
// Layout sources (public): rizin librz/bin/format/dmp/dmp_specs.h, kdmp-parser (0vercl0k), rekall's
// crashdump overlay, and the Microsoft DUMP_HEADER64 description; each offset is named next to its constant.
package dump
