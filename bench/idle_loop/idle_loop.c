/*
 * Keeps one core from idling: a busy loop at SCHED_IDLE, pinned to the core it is given.
 *
 * usage: idle_loop CORE
 *
 * SCHED_IDLE runs only when nothing else wants the core and is preempted as soon as another
 * task of the same CPU group wakes, so the core never halts (waking a halted vCPU goes
 * through the hypervisor) and the tasks it yields to lose nothing. The loop body is the CPU's
 * spin-wait hint, so it leaves the core's caches and, on SMT hosts, the sibling's execution
 * units alone.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORE\n", argv[0]);
        return 2;
    }
    char *end = NULL;
    long core = strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || core < 0 || core >= CPU_SETSIZE) {
        fprintf(stderr, "idle_loop: invalid core %s\n", argv[1]);
        return 2;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)core, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("idle_loop: sched_setaffinity");
        return 1;
    }
    struct sched_param param = {.sched_priority = 0};
    if (sched_setscheduler(0, SCHED_IDLE, &param) != 0) {
        perror("idle_loop: sched_setscheduler");
        return 1;
    }
    for (;;) CPU_RELAX();
}
