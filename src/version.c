/*
 * version.c
 *		Is this database's payflow SQL the version this library is built for?
 *
 * One payflow.so serves every database of the cluster, and a package
 * upgrade replaces it before anyone has run ALTER EXTENSION payflow UPDATE.
 * The library's SQL expects PAYFLOW_SQL_VERSION's tables, so in a database
 * still at an older version every API function refuses with PF050, naming
 * the command that fixes it, instead of failing on a missing column
 * halfway through.  (The worker and reconcile() wait for the update in the
 * same way; the triggers, which only read rows, go on working.)
 *
 * The answer is read from pg_extension, without SQL, the first time a
 * backend calls payflow; a match is kept for the backend's life (an
 * extension is never updated to an older version), so a call pays one
 * branch.
 */
#include "payflow.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

bool		pf_sql_version_ok = false;

/* extversion of payflow in this database, palloc'd; NULL if not installed. */
char *
pf_installed_sql_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("payflow"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		value = heap_getattr(tuple, Anum_pg_extension_extversion,
										 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(value);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/* The slow path of PF_REQUIRE_SQL_VERSION: look, remember a match, or refuse. */
void
pf_check_sql_version(void)
{
	char	   *version = pf_installed_sql_version();

	if (version != NULL && strcmp(version, PAYFLOW_SQL_VERSION) == 0)
	{
		pf_sql_version_ok = true;
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_PF_NOT_SET_UP),
			 errmsg("payflow in this database is at version %s, the payflow library at %s",
					version ? version : "(none)", PAYFLOW_SQL_VERSION),
			 errdetail("The library was upgraded; this database's payflow tables and functions were not."),
			 errhint("Run ALTER EXTENSION payflow UPDATE in this database.")));
}
