/*
 * tap.h -- the TAP lines of the unit test programs: check() records one
 * test, tap_done() prints the totals and gives the exit status.  Each test
 * program includes it once.
 */
#ifndef PAYFLOW_UNIT_TAP_H
#define PAYFLOW_UNIT_TAP_H

#include <stdbool.h>
#include <stdio.h>

static int	tap_passed = 0;
static int	tap_failed = 0;

static void
tap_record(bool ok, const char *name)
{
	printf("%s %d - %s\n", ok ? "ok" : "not ok", tap_passed + tap_failed + 1, name);
	if (ok)
		tap_passed++;
	else
		tap_failed++;
}

/* "# WHAT: N passed, M failed"; 0 when none failed, else 1 */
static int
tap_done(const char *what)
{
	printf("# %s: %d passed, %d failed\n", what, tap_passed, tap_failed);
	return tap_failed == 0 ? 0 : 1;
}

#endif
