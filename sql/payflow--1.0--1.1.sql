/*
 * payflow 1.0 -> 1.1 update script.
 *
 * sql/payflow--1.0.sql is released and frozen: every schema change of 1.1
 * is made here, and CREATE EXTENSION payflow installs 1.1 by running the
 * 1.0 script and then this one, so a fresh 1.1 and an updated 1.0 are the
 * same schema by construction.  Each part says which concern it serves.
 * Every name is schema-qualified, as in the install script.
 */

\echo Use "ALTER EXTENSION payflow UPDATE TO '1.1'" to load this file. \quit

-- ===========================================================================
-- Part 1. The worker's own role and a pinned search_path everywhere
-- ===========================================================================
-- The reconciler connects as payflow_worker (or the role named by
-- payflow.worker_role), never as a superuser, and CALL payflow.reconcile()
-- runs each of its transactions as that role.  PostgreSQL 15 lets a
-- background worker connect only as a role that may log in; the worker's
-- connection does not pass through pg_hba.conf, so a DBA can add `reject`
-- lines for payflow_worker there and nobody else can log in as it.  It
-- has no password.  Its rights are exactly what a pass reads and writes.
DO $role$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'payflow_worker') THEN
        CREATE ROLE payflow_worker LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
END
$role$;

GRANT USAGE ON SCHEMA payflow TO payflow_worker;
GRANT SELECT ON payflow.transitions, payflow.channels, payflow.channel_secrets,
                payflow.order_lines
    TO payflow_worker;
GRANT SELECT, UPDATE ON payflow.orders, payflow.payments, payflow.stock TO payflow_worker;
GRANT SELECT, INSERT, UPDATE ON payflow.refunds, payflow.cart_items TO payflow_worker;
GRANT SELECT, INSERT ON payflow.events TO payflow_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON payflow.pending_checks TO payflow_worker;

-- Operators may run a pass from SQL (pg_cron); it runs as the worker role.
GRANT EXECUTE ON PROCEDURE payflow.reconcile(integer, integer) TO payflow_admin;

-- (part 1 ends here)

-- ===========================================================================
-- Part 2. Channels: secrets bound to driver and host, allowed hosts, audit
-- ===========================================================================

-- (part 2 ends here)

-- ===========================================================================
-- Part 3. Channel input: exact amounts, states, timestamps, callback limits
-- ===========================================================================

-- (part 3 ends here)

-- ===========================================================================
-- Part 4. Application input: lengths, times, refunds, cart size, views
-- ===========================================================================

-- (part 4 ends here)
