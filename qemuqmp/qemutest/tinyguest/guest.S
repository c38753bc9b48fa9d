/*
 * tinyguest: the smallest guest that has the anchors kdstub's QEMU layer is tested against.
 *
 * Multiboot v1 entry in 32-bit mode, then long mode with a kernel-like alias at 0xFFFFF80000000000
 * (PML4 slot 496 shares the identity PDPT), a "KPCR" marker object at GS base, KernelGSBase and
 * LSTAR set, an IDT and GDT loaded through their high-alias addresses, APs started with INIT-SIPI,
 * and counter loops with a tick function (breakpoint target) and a watched variable (watchpoint
 * target) on a data page separate from the code. Everything is linked at physical addresses and
 * the 64-bit code is RIP-relative, so it runs unchanged at the alias.
 */

        .set KBASE,          0xFFFFF80000000000
        .set MSR_EFER,       0xC0000080
        .set MSR_LSTAR,      0xC0000082
        .set MSR_FS_BASE,    0xC0000100
        .set MSR_GS_BASE,    0xC0000101
        .set MSR_KGS_BASE,   0xC0000102
        .set LAPIC,          0xFEE00000
        .set TRAMPOLINE,     0x8000
        .set USER_FS,        0x7FF712340000
        .set USER_KGS,       0xDEADBEEF00
        .set WATCH_MASK,     0xFFFF

        .section .multiboot, "a"
        .align 4
        .long 0x1BADB002
        .long 0x00000003
        .long -(0x1BADB002 + 0x00000003)

        .text
        .code32
        .globl _start
_start:
        cli
        movl    $boot_stack_top, %esp
        movl    %eax, mb_magic
        movl    %ebx, mb_info

        /* clear the page tables (4 pages) */
        movl    $pml4, %edi
        xorl    %eax, %eax
        movl    $(4 * 4096 / 4), %ecx
        rep stosl

        movl    $pdpt, %eax
        orl     $3, %eax
        movl    %eax, pml4
        movl    %eax, pml4 + 496 * 8
        movl    $pd0, %eax
        orl     $3, %eax
        movl    %eax, pdpt
        movl    $pd3, %eax
        orl     $3, %eax
        movl    %eax, pdpt + 3 * 8

        /* PD0: first 1 GiB, PD3: 3-4 GiB (LAPIC), 2 MiB pages */
        movl    $pd0, %edi
        movl    $0x83, %eax
        movl    $512, %ecx
1:      movl    %eax, (%edi)
        addl    $0x200000, %eax
        addl    $8, %edi
        loop    1b
        movl    $pd3, %edi
        movl    $0xC0000093, %eax
        movl    $512, %ecx
2:      movl    %eax, (%edi)
        addl    $0x200000, %eax
        addl    $8, %edi
        loop    2b

        call    enable_paging32
        lgdt    gdt_ptr32
        ljmp    $0x08, $long_entry

/* shared by BSP (protected mode) and APs (real mode, via 0x66 prefixes in the trampoline copy) */
enable_paging32:
        movl    %cr4, %eax
        orl     $0x620, %eax            /* PAE | OSFXSR | OSXMMEXCPT */
        movl    %eax, %cr4
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    $MSR_EFER, %ecx
        rdmsr
        orl     $0x901, %eax            /* SCE | LME | NXE */
        wrmsr
        movl    %cr0, %eax
        orl     $0x80010001, %eax       /* PG | WP | PE */
        movl    %eax, %cr0
        ret

        .code64
long_entry:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movabsq $KBASE, %rax
        leaq    high_entry(%rip), %rbx
        addq    %rax, %rbx
        jmp     *%rbx

high_entry:
        leaq    boot_stack_top(%rip), %rsp

        /* 32 interrupt gates, all to isr_halt */
        leaq    idt(%rip), %rdi
        leaq    isr_halt(%rip), %rax
        movl    $32, %ecx
3:      movq    %rax, %rdx
        andq    $0xFFFF, %rdx
        orq     $(0x08 << 16), %rdx
        movq    $0x8E, %rsi
        shlq    $40, %rsi
        orq     %rsi, %rdx
        movq    %rax, %rsi
        shrq    $16, %rsi
        andq    $0xFFFF, %rsi
        shlq    $48, %rsi
        orq     %rsi, %rdx
        movq    %rdx, (%rdi)
        movq    %rax, %rdx
        shrq    $32, %rdx
        movq    %rdx, 8(%rdi)
        addq    $16, %rdi
        decl    %ecx
        jnz     3b

        movw    $(32 * 16 - 1), idt_ptr(%rip)
        leaq    idt(%rip), %rax
        movq    %rax, idt_ptr + 2(%rip)
        lidt    idt_ptr(%rip)
        movw    $(gdt_end - gdt - 1), gdt_ptr64(%rip)
        leaq    gdt(%rip), %rax
        movq    %rax, gdt_ptr64 + 2(%rip)
        lgdt    gdt_ptr64(%rip)

        movl    $MSR_FS_BASE, %ecx
        movabsq $USER_FS, %rax
        call    wrmsr64
        movl    $MSR_GS_BASE, %ecx
        leaq    kpcr(%rip), %rax
        call    wrmsr64
        movl    $MSR_KGS_BASE, %ecx
        movabsq $USER_KGS, %rax
        call    wrmsr64
        movl    $MSR_LSTAR, %ecx
        leaq    syscall_entry(%rip), %rax
        call    wrmsr64

        /* copy the AP trampoline to 0x8000 (through the alias) */
        leaq    trampoline_start(%rip), %rsi
        movabsq $(KBASE + TRAMPOLINE), %rdi
        movl    $(trampoline_end - trampoline_start), %ecx
        rep movsb

        /* LAPIC: enable, INIT, SIPI, SIPI to all but self */
        movl    $LAPIC, %edi
        movl    $0x1FF, 0xF0(%rdi)
        movl    $0, 0x310(%rdi)
        movl    $0x000C4500, 0x300(%rdi)
        call    delay
        movl    $(0x000C4600 | (TRAMPOLINE >> 12)), 0x300(%rdi)
        call    delay
        movl    $(0x000C4600 | (TRAMPOLINE >> 12)), 0x300(%rdi)
        call    delay

        .globl main_loop
main_loop:
        incq    counter(%rip)
        call    tick
        movq    counter(%rip), %rax
        testq   $WATCH_MASK, %rax
        jnz     main_loop
        incq    watched(%rip)
        jmp     main_loop

        .globl tick
tick:
        addq    $1, tick_count(%rip)
        ret

delay:
        movl    $20000, %ecx
4:      pause
        decl    %ecx
        jnz     4b
        ret

/* rcx = MSR, rax = value */
wrmsr64:
        movq    %rax, %rdx
        shrq    $32, %rdx
        wrmsr
        ret

        .globl isr_halt
isr_halt:
        hlt
        jmp     isr_halt

        .globl syscall_entry
syscall_entry:
        sysretq

/* APs arrive here from the trampoline in long mode, still at the identity mapping */
ap_long:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movabsq $KBASE, %rax
        leaq    ap_high(%rip), %rbx
        addq    %rax, %rbx
        jmp     *%rbx
ap_high:
        movl    $1, %eax
        lock xaddl %eax, ap_index(%rip)         /* eax = n, 0-based */
        leaq    ap_stacks(%rip), %rsp
        leal    1(%rax), %ebx
        shll    $12, %ebx
        addq    %rbx, %rsp
        leaq    kpcr(%rip), %rdx
        leal    1(%rax), %ebx
        shll    $8, %ebx
        addq    %rbx, %rdx
        movq    %rdx, %rax
        movl    $MSR_GS_BASE, %ecx
        call    wrmsr64
        lidt    idt_ptr(%rip)
        lgdt    gdt_ptr64(%rip)
        .globl ap_loop
ap_loop:
        incq    ap_counter(%rip)
        call    ap_tick
        jmp     ap_loop

        .globl ap_tick
ap_tick:
        addq    $1, ap_tick_count(%rip)
        ret

/* 16-bit AP entry, copied to TRAMPOLINE; CS = TRAMPOLINE >> 4, IP = 0 */
        .code16
trampoline_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        lgdtl   TRAMPOLINE + (tramp_gdt_ptr - trampoline_start)
        movl    %cr4, %eax
        orl     $0x620, %eax
        movl    %eax, %cr4
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    $MSR_EFER, %ecx
        rdmsr
        orl     $0x901, %eax
        wrmsr
        movl    %cr0, %eax
        orl     $0x80010001, %eax
        movl    %eax, %cr0
        ljmpl   $0x08, $ap_long
        .align 4
tramp_gdt_ptr:
        .word   gdt_end - gdt - 1
        .long   gdt
trampoline_end:

        .data
        .align 64
gdt:
        .quad   0
        .quad   0x00AF9A000000FFFF      /* 0x08: 64-bit code */
        .quad   0x00CF92000000FFFF      /* 0x10: data */
gdt_end:
        .align 16
gdt_ptr32:
        .word   gdt_end - gdt - 1
        .long   gdt
        .align 16
gdt_ptr64:
        .word   0
        .quad   0
        .align 16
idt_ptr:
        .word   0
        .quad   0
        .align 64
        .globl counter
counter:        .quad 0
        .align 64
        .globl watched
watched:        .quad 0
        .align 64
        .globl tick_count
tick_count:     .quad 0
        .align 64
        .globl ap_counter
ap_counter:     .quad 0
        .align 64
        .globl ap_tick_count
ap_tick_count:  .quad 0
        .align 64
ap_index:       .long 0
        .align 64
mb_magic:       .long 0
mb_info:        .long 0
        .align 256
        .globl kpcr
kpcr:
        .ascii  "KPCRKPCR"
        .fill   0x100 - 8, 1, 0
        .ascii  "KPCRKPCR"
        .fill   0x100 - 8, 1, 0
        .ascii  "KPCRKPCR"
        .fill   0x100 - 8, 1, 0
        .ascii  "KPCRKPCR"
        .fill   0x100 - 8, 1, 0
        .align 4096
        .globl idt
idt:
        .fill   32 * 16, 1, 0

        .bss
        .align 4096
        .globl pml4
pml4:   .skip 4096
pdpt:   .skip 4096
pd0:    .skip 4096
pd3:    .skip 4096
        .align 16
        .skip 16384
boot_stack_top:
ap_stacks:
        .skip 4096 * 8
