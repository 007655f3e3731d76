/*
 * fuzz_main.c
 *		payflow_fuzz(target text, args text[]): run libFuzzer on one target
 *		inside this backend (LLVMFuzzerRunDriver), with args as libFuzzer's
 *		command line.  libFuzzer ends the process when it is done (exit 0)
 *		or on a finding, so this is run by test/fuzz/run.sh in a throwaway
 *		single-user backend, one process per target.
 *
 * Each input runs in PG_TRY in a fresh memory context.  That context is
 * built so that AddressSanitizer sees its chunks: with a tiny maximum block
 * size, aset.c gives every chunk over 16 bytes its own malloc() block, so
 * reading or writing past a palloc'd string, or using it after pfree,
 * hits an ASan redzone instead of a neighbour in the same block.
 */
#include "fuzz.h"

#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(payflow_fuzz);

extern int	LLVMFuzzerRunDriver(int *argc, char ***argv,
								int (*callback) (const uint8_t *data, size_t size));

#define MAX_TARGETS 64

static const FuzzTarget *targets[MAX_TARGETS];
static int	ntargets;
static const FuzzTarget *current;
static MemoryContext input_context;

void
fuzz_register(const FuzzTarget *target)
{
	if (ntargets < MAX_TARGETS)
		targets[ntargets++] = target;
}

void
fuzz_fail(const char *format,...)
{
	va_list		args;

	fprintf(stderr, "payflow-fuzz: FINDING in target %s: ", current ? current->name : "?");
	va_start(args, format);
	vfprintf(stderr, format, args);
	va_end(args);
	fputc('\n', stderr);
	fflush(stderr);
	abort();
}

static bool
error_allowed(int sqlerrcode)
{
	for (int i = 0; current->allowed_errors[i] != 0; i++)
		if (current->allowed_errors[i] == sqlerrcode)
			return true;
	return false;
}

static int
one_input(const uint8_t *data, size_t size)
{
	MemoryContext old = MemoryContextSwitchTo(input_context);
	char	   *copy = palloc(size + 1);

	memcpy(copy, data, size);
	copy[size] = '\0';
	PG_TRY();
	{
		current->run(copy, size);
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(TopMemoryContext);
		error = CopyErrorData();
		FlushErrorState();
		if (!error_allowed(error->sqlerrcode))
			fuzz_fail("unexpected ERROR %s: %s (%s)", unpack_sql_state(error->sqlerrcode),
					  error->message, error->detail ? error->detail : "no detail");
		FreeErrorData(error);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(input_context);
	return 0;
}

Datum
payflow_fuzz(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *array = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			argc;
	char	  **argv;

	for (int i = 0; i < ntargets; i++)
		if (strcmp(targets[i]->name, name) == 0)
			current = targets[i];
	if (current == NULL)
	{
		StringInfoData known;

		initStringInfo(&known);
		for (int i = 0; i < ntargets; i++)
			appendStringInfo(&known, "%s%s", i ? " " : "", targets[i]->name);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no fuzz target \"%s\"", name),
				 errdetail("Targets: %s.", known.data)));
	}
	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	argv = MemoryContextAllocZero(TopMemoryContext, sizeof(char *) * (nelems + 2));
	argv[0] = MemoryContextStrdup(TopMemoryContext, name);
	for (int i = 0; i < nelems; i++)
		argv[i + 1] = MemoryContextStrdup(TopMemoryContext,
										  nulls[i] ? "" : TextDatumGetCString(elems[i]));
	argc = nelems + 1;

	/*
	 * A single-user backend never sets the stack base, so check_stack_depth()
	 * checks nothing there and deep recursion would crash instead of raising
	 * "stack depth limit exceeded" as in a normal backend: set it here.
	 */
	(void) set_stack_base();

	/* see the header comment: chunks over 16 bytes get their own malloc() */
	input_context = AllocSetContextCreate(TopMemoryContext, "payflow fuzz input",
										  0, 200, 200);
	if (current->setup)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		current->setup();
		MemoryContextSwitchTo(old);
	}
	PG_RETURN_INT32(LLVMFuzzerRunDriver(&argc, &argv, one_input));
}
