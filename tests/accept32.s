# A 32-bit (i386) process for kernel_net_test: accepts two connections on
# descriptor 3, a listening TCP socket it inherits, the two ways a 32-bit
# program can: socketcall(SYS_ACCEPT), then accept4. Closes each. Exit
# status 0, or the step that failed (1, 2). No libc: plain int 0x80.
        .globl _start
        .text
_start:
        movl    $102, %eax              # socketcall(SYS_ACCEPT, {3, NULL, NULL})
        movl    $5, %ebx
        leal    accept_args, %ecx
        int     $0x80
        testl   %eax, %eax
        js      first_failed
        movl    %eax, %ebx              # close(it)
        movl    $6, %eax
        int     $0x80
        movl    $364, %eax              # accept4(3, NULL, NULL, 0)
        movl    $3, %ebx
        xorl    %ecx, %ecx
        xorl    %edx, %edx
        xorl    %esi, %esi
        int     $0x80
        testl   %eax, %eax
        js      second_failed
        movl    %eax, %ebx              # close(it)
        movl    $6, %eax
        int     $0x80
        xorl    %ebx, %ebx
        jmp     leave
first_failed:
        movl    $1, %ebx
        jmp     leave
second_failed:
        movl    $2, %ebx
leave:
        movl    $1, %eax                # exit(%ebx)
        int     $0x80

        .data
accept_args:
        .long   3, 0, 0

        .section .note.GNU-stack,"",@progbits
