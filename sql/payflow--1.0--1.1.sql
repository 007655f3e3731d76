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

-- (part 1 ends here)

-- ===========================================================================
-- Part 2. Channels: secrets bound to driver and host, allowed hosts, audit
-- ===========================================================================

-- (part 2 ends here)

-- ===========================================================================
-- Part 3. Channel input: exact amounts, states, timestamps, callback limits
-- ===========================================================================

-- The largest callback body handle_notification reads (src/notification.c):
-- operators tune it like payflow's other settings; the application, which
-- calls handle_notification, cannot raise its own limit.
GRANT SET, ALTER SYSTEM ON PARAMETER payflow.max_notification_bytes TO payflow_admin;

-- (part 3 ends here)

-- ===========================================================================
-- Part 4. Application input: lengths, times, refunds, cart size, views
-- ===========================================================================

-- (part 4 ends here)
