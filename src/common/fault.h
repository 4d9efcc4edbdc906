/* fault.h - fault-injection points for the fault matrix (tests/faults).
 *
 * A build configured with -Dfault_points=true (the sanitizer build that
 * the system tests use) stops the whole process with SIGSTOP the first
 * time it reaches the point named in $FERRY_FAULT_POINT, after logging it;
 * a test then injects its fault (kills a process, cuts a link, ...) at
 * exactly that phase and continues it with SIGCONT. In other builds, and
 * without the variable, a point does nothing. Thread-safe.
 */
#ifndef FERRY_FAULT_H
#define FERRY_FAULT_H

/* The points (docs/reliability.md lists them with their phase). */
void fault_point(const char *name);

#endif
