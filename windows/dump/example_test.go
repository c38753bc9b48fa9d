package dump_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log"

	"github.com/kdstub/kdstub/windows/dump"
)

// Reading the pieces of a triage dump that kernel-object code needs: the decoded KDBG and the crashing
// thread's EPROCESS (System in the shared 19041 dump), each with its VA, plus virtual reads over the rest.
func ExampleFile_Triage() {
	d, err := dump.Open("win10-19041-x64-triage.dmp")
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	t, err := d.Triage()
	if err != nil {
		log.Fatal(err)
	}
	kernBase := binary.LittleEndian.Uint64(t.KDBG.Data[0x18:])
	fmt.Printf("KDBG at %#x, KernBase %#x\n", t.KDBG.VA, kernBase)
	fmt.Printf("EPROCESS copy at %#x (%d bytes)\n", t.Process.VA, len(t.Process.Data))
	for _, drv := range t.Drivers[:2] {
		fmt.Printf("%#x %#x %s\n", drv.DllBase, drv.SizeOfImage, drv.Name)
	}
	mz := make([]byte, 2)
	if err := d.ReadVirtual(context.Background(), kernBase, mz); err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(mz))
}

// A full or bitmap dump serves guest-physical reads, like a live machine's RAM.
func ExampleFile_ReadPhysical() {
	d, err := dump.Open("memory.dmp")
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	h := d.Header()
	pml4 := make([]byte, dump.PageSize)
	if err := d.ReadPhysical(context.Background(), h.DTB&^0xFFF, pml4); err != nil {
		log.Fatal(err) // errors.Is(err, dump.ErrNotPresent) for pages the dump lacks
	}
	fmt.Printf("PML4[0x1ED] = %#x\n", binary.LittleEndian.Uint64(pml4[0x1ED*8:]))
}
