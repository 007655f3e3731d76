#!/usr/bin/python3
"""test/crash/campaign.py -- payflow's crash campaign.

Runs a mixed payment load (an application's client sessions) against a
throwaway PostgreSQL cluster with payflow and its worker, and the project's
test channel server (http_json) with its journal, while a chaos thread
kill -9s, at random moments every few seconds and in rotation, the
postmaster (then starts PostgreSQL again on the same data directory), the
worker, a random client backend and the channel server (then starts it
again on the same port).  Channel faults (5xx, timeouts, slow answers,
garbage) are injected at a low rate, and refunds are done by the channel
at once or accepted and done on their first query, in turn.  The load
survives the kills the way an application does: sessions reconnect and
retry; a call whose outcome is unknown is retried under its idempotency
key, or looked up.  Beside the worker, a session calls
CALL payflow.reconcile() every second or two, as a pg_cron job would.

Then it drains (the worker finishes everything due), runs payflow.verify()
if the database has it, and compares payflow's books with the channel
server's own record of what it took and refunded.  It prints the counts
(payments by scenario, kills by kind, violations) and a JSON summary, and
exits 0 only when there is no violation.

Usage (as root, like the test suite; PostgreSQL runs as user postgres):
  campaign.py --pgbin DIR [--seed N] [--payments N] [--kills N] ...
Reproduce a run with the seed it prints (CAMPAIGN_SEED or --seed): the
scenario sequence, amounts, kill kinds and intervals follow from it; the
exact moments the kills land depend on timing.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import psycopg2.extras

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the test channel server's protocols: payflow channel name, currency, share of orders
CHANNELS = {'http_json': ('cc_http', 'CNY', 7), 'stripe': ('cc_stripe', 'USD', 3)}
KILL_KINDS = ('postmaster', 'worker', 'backend', 'channel')
SCENARIOS = {
    # name: (weight, order statuses it may end in)
    'dropped_callback': (3, {'paid'}),
    'callback_once': (2, {'paid'}),
    'callback_repeated': (2, {'paid'}),
    'two_attempts_paid': (2, {'paid'}),
    'app_failed_then_paid': (1, {'paid'}),
    'partial_refunds': (2, {'partially_refunded', 'refunded'}),
    'expiry': (2, {'expired'}),
    'cancel': (2, {'cancelled'}),
}
SCHEDULE = ','.join(['1s'] * 20 + ['2s'] * 30 + ['5s'] * 60)


def log(msg):
    print(f'# {time.strftime("%H:%M:%S")} {msg}', flush=True)


class Fatal(Exception):
    pass


class AppError(Exception):
    """A refusal of payflow's API (SQLSTATE PFxxx): an answer, not a crash."""

    def __init__(self, code, message):
        super().__init__(f'{code}: {message}')
        self.code = code


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def alive(pid):
    """Is pid running (a zombie nobody reaped is not)?"""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def as_postgres(args, **kw):
    if os.geteuid() == 0:
        args = ['runuser', '-u', 'postgres', '--'] + args
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


# ------------------------------------------------------------------ world

class World:
    """The cluster, the channel server, and the counters every thread shares."""

    def __init__(self, args):
        self.args = args
        self.pgbin = args.pgbin
        self.work = tempfile.mkdtemp(prefix='payflow-crash.')
        self.data = os.path.join(self.work, 'data')
        self.sockdir = self.work
        self.pgport = free_port()
        self.chport = free_port()
        self.channel_proc = None
        self.lock = threading.Lock()
        self.stop_load = threading.Event()
        self.stop_chaos = threading.Event()
        self.kills = {k: 0 for k in KILL_KINDS}
        self.kill_misses = {k: 0 for k in KILL_KINDS}
        self.faults = 0
        self.scenarios = {name: 0 for name in SCENARIOS}
        self.by_channel = {name: 0 for name in CHANNELS}
        self.attempts = 0
        self.cron_passes = 0
        self.outcomes = {}        # (scenario, what happened) -> count
        self.orders = {}          # order_id -> scenario
        self.expect = {}          # order_id -> statuses it may end in, when not the scenario's
        self.reconnects = 0
        self.uncertain = 0
        self.errors = []          # unexpected errors of the load: violations
        if os.geteuid() == 0:
            shutil.chown(self.work, 'postgres', 'postgres')
        os.chmod(self.work, 0o700)

    def count(self, scenario, what):
        with self.lock:
            self.outcomes[(scenario, what)] = self.outcomes.get((scenario, what), 0) + 1

    # --- PostgreSQL
    def pg_ctl(self, *args):
        return as_postgres([os.path.join(self.pgbin, 'pg_ctl'), '-D', self.data] + list(args))

    def start_cluster(self):
        r = as_postgres([os.path.join(self.pgbin, 'initdb'), '-D', self.data, '-U', 'postgres',
                         '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C.UTF-8'])
        if r.returncode != 0:
            raise Fatal('initdb failed: ' + r.stdout)
        with open(os.path.join(self.data, 'postgresql.conf'), 'a') as conf:
            conf.write(f"""
listen_addresses = ''
unix_socket_directories = '{self.sockdir}'
port = {self.pgport}
max_connections = 60
fsync = {'on' if self.args.fsync else 'off'}
log_min_messages = warning
restart_after_crash = on
shared_preload_libraries = 'payflow'
payflow.database = 'campaign'
payflow.allowed_hosts = '127.0.0.1'
payflow.http_timeout = '1s'
payflow.check_schedule = '{SCHEDULE}'
payflow.payment_lock_window = 0
""")
        self.start_postgres()
        su = self.connect('postgres', 'postgres')
        su.cursor().execute('CREATE DATABASE campaign')
        su.close()

    def start_postgres(self, deadline_s=60):
        """Start on the same data directory; after a kill -9 of the postmaster
        its orphaned children may still hold the shared memory a little."""
        deadline = time.time() + deadline_s
        while True:
            r = self.pg_ctl('-l', os.path.join(self.work, 'server.log'), '-w', '-t', '30', 'start')
            if r.returncode == 0:
                return
            if time.time() > deadline:
                raise Fatal('PostgreSQL does not start again: ' + r.stdout[-2000:])
            time.sleep(0.3)

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data, 'postmaster.pid')) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def connect(self, user, db='campaign', timeout=3):
        conn = psycopg2.connect(host=self.sockdir, port=self.pgport, dbname=db, user=user,
                                connect_timeout=timeout, application_name='crash campaign')
        conn.autocommit = True
        return conn

    def wait_db(self, user='postgres', deadline_s=120):
        deadline = time.time() + deadline_s
        while True:
            try:
                return self.connect(user)
            except psycopg2.Error:
                if time.time() > deadline:
                    raise Fatal(f'the database did not accept connections within {deadline_s}s')
                time.sleep(0.2)

    # --- the channel server
    def start_channel(self):
        keys = os.path.join(self.work, 'keys')
        binary = os.path.join(ROOT, 'test/channel_server/payflow-test-channel')
        deadline = time.time() + 30
        while True:
            out = open(os.path.join(self.work, 'channel.log'), 'a')
            self.channel_proc = subprocess.Popen(
                [binary, '--port', str(self.chport), '--keys', keys,
                 '--journal', os.path.join(self.work, 'channel.journal')],
                stdout=out, stderr=out)
            out.close()
            while time.time() < deadline and self.channel_proc.poll() is None:
                try:
                    urllib.request.urlopen(f'{self.channel_url}/admin/health', timeout=1).read()
                    return
                except OSError:
                    time.sleep(0.05)
            if self.channel_proc.poll() is None:
                self.channel_proc.kill()
            self.channel_proc.wait()
            if time.time() > deadline:
                raise Fatal('the test channel server does not start again (see channel.log)')
            time.sleep(0.2)   # the port may still be held a moment

    @property
    def channel_url(self):
        return f'http://127.0.0.1:{self.chport}'

    def admin(self, path, body=None, deadline_s=60):
        """POST (or GET) to the channel server's admin API; retried while it is
        down.  Returns (status, json)."""
        deadline = time.time() + deadline_s
        data = json.dumps(body).encode() if body is not None else None
        while True:
            req = urllib.request.Request(f'{self.channel_url}/admin/{path}', data=data,
                                         headers={'Content-Type': 'application/json'})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, json.loads(resp.read() or b'null')
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read() or b'null')
            except (OSError, ValueError):
                if time.time() > deadline:
                    raise Fatal(f'the channel server did not answer /admin/{path} for {deadline_s}s')
                time.sleep(0.1)

    def setup(self):
        make = subprocess.run(['make', '-s', '-C', os.path.join(ROOT, 'test/channel_server')],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if make.returncode != 0:
            raise Fatal('cannot build the test channel server: ' + make.stdout)
        subprocess.run(['bash', os.path.join(ROOT, 'test/channel_server/make-keys.sh'),
                        os.path.join(self.work, 'keys')], stdout=subprocess.DEVNULL, check=True)
        self.start_cluster()
        self.start_channel()
        secret = open(os.path.join(self.work, 'keys/http_json_secret.txt')).read().strip()
        su = self.connect('postgres')
        cur = su.cursor()
        cur.execute('CREATE EXTENSION payflow')
        cur.execute('CREATE ROLE campaign_app LOGIN IN ROLE payflow_app')
        # orders of the expiry scenario are created by a session whose orders live 4 s
        cur.execute('CREATE ROLE campaign_app_short LOGIN IN ROLE payflow_app')
        cur.execute("ALTER ROLE campaign_app_short SET payflow.order_ttl = '4s'")
        # an operator's pg_cron job calls reconcile() beside the worker
        cur.execute('CREATE ROLE campaign_ops LOGIN IN ROLE payflow_admin')
        cur.execute("INSERT INTO payflow.stock (sku, available) VALUES ('CC-STOCKED', 100000000)")
        cur.execute("SELECT payflow.set_channel(%s, 'http_json', %s, '{}', jsonb_build_object('hmac_secret', %s::text))",
                    (CHANNELS['http_json'][0], f'{self.channel_url}/http_json', secret))
        keys = {k: open(os.path.join(self.work, 'keys', f'stripe_{k}.txt')).read().strip() for k in ('sk', 'whsec')}
        cur.execute("SELECT payflow.set_channel(%s, 'stripe', %s, '{}', jsonb_build_object("
                    "'secret_key', %s::text, 'webhook_secret', %s::text))",
                    (CHANNELS['stripe'][0], self.channel_url, keys['sk'], keys['whsec']))
        su.close()

    def teardown(self, keep):
        self.stop_chaos.set()
        if self.channel_proc and self.channel_proc.poll() is None:
            self.channel_proc.terminate()
            try:
                self.channel_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.channel_proc.kill()
        self.pg_ctl('-m', 'immediate', '-w', 'stop')
        if keep:
            log(f'work directory kept: {self.work} (server.log, channel.log, channel.journal)')
        else:
            shutil.rmtree(self.work, ignore_errors=True)


# ------------------------------------------------------------ the client

def is_crash(e):
    """Did the call die with its connection (outcome unknown) rather than
    being answered?"""
    # an error the server sent has a SQLSTATE; a lost connection has none
    return e.pgcode is None or isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)) or \
        e.pgcode[:2] in ('08', '57', '53', '40')


class Client:
    """One application session: reconnects and retries across crashes."""

    def __init__(self, world, user, rng):
        self.w = world
        self.user = user
        self.rng = rng
        self.conn = None

    def _conn(self):
        if self.conn is None or self.conn.closed:
            deadline = time.time() + 180
            while True:
                try:
                    self.conn = self.w.connect(self.user)
                    break
                except psycopg2.Error:
                    if time.time() > deadline:
                        raise Fatal('the load could not reconnect for 180 s')
                    time.sleep(0.1 + self.rng.random() * 0.2)
        return self.conn

    def _drop(self):
        with self.w.lock:
            self.w.reconnects += 1
        try:
            self.conn.close()
        except Exception:
            pass
        self.conn = None

    def call(self, sql, params=(), lookup=None):
        """Run one statement in its own transaction; rows as dicts.  After a
        crash the call is retried (every call made here is idempotent, by its
        key or by nature) unless lookup, run first, finds that it was done."""
        died = False
        while True:
            try:
                cur = self._conn().cursor(cursor_factory=psycopg2.extras.RealDictCursor)
                if died and lookup is not None:
                    cur.execute(*lookup)
                    rows = cur.fetchall()
                    if rows:
                        return rows
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
            except psycopg2.Error as e:
                if (e.pgcode or '').startswith('PF'):
                    raise AppError(e.pgcode, e.pgerror.strip().split('\n')[0])
                if not is_crash(e):
                    raise
                if not died:
                    with self.w.lock:
                        self.w.uncertain += 1
                died = True
                self._drop()
                time.sleep(0.05 + self.rng.random() * 0.2)

    def one(self, sql, params=(), lookup=None):
        return self.call(sql, params, lookup)[0]


# ------------------------------------------------------------- scenarios

class Load:
    def __init__(self, world, index, seed):
        self.w = world
        self.index = index
        self.rng = random.Random(seed)
        self.app = Client(world, 'campaign_app', self.rng)
        self.short = Client(world, 'campaign_app_short', self.rng)
        self.n = 0

    def checkout(self, client, scenario):
        self.n += 1
        customer = f'cc-{self.index}-{self.n}'
        price = self.rng.randint(100, 99999)
        currency = CHANNELS[self.kind][1]
        client.call('SELECT payflow.cart_put(%s, %s, 1, %s, %s)', (customer, 'CC-SKU', price, currency))
        if self.rng.random() < 0.5:
            client.call('SELECT payflow.cart_put(%s, %s, %s, 100, %s)',
                        (customer, 'CC-STOCKED', self.rng.randint(1, 3), currency))
        order = client.one('SELECT id, total_amount FROM payflow.create_order_from_cart(%s, %s)',
                           (customer, 'checkout'))
        with self.w.lock:
            self.w.orders[order['id']] = scenario
            self.w.scenarios[scenario] += 1
            self.w.by_channel[self.kind] += 1
        return order['id'], order['total_amount']

    def begin(self, client, order_id, key):
        row = client.one('SELECT payment_no, amount FROM payflow.begin_payment(%s, %s, %s)',
                         (order_id, CHANNELS[self.kind][0], key))
        with self.w.lock:
            self.w.attempts += 1
        # the user is sent to the channel, which now knows the attempt
        _, view = self.w.admin('payments', {'channel': self.kind, 'payment_no': row['payment_no'],
                                            'amount': row['amount'], 'currency': CHANNELS[self.kind][1]})
        if self.kind == 'stripe' and self.rng.random() < 0.5:
            # the app records the PaymentIntent (else the worker finds it by search)
            client.call('SELECT payflow.attach_channel_ref(%s, %s)', (row['payment_no'], view['stripe_id']))
        return row['payment_no'], row['amount']

    def pay(self, payment_no):
        """The user pays at the channel (unless the channel closed the attempt).
        Returns (taken, notification or None)."""
        status, answer = self.w.admin('pay', {'channel': self.kind, 'payment_no': payment_no,
                                              'callback': 'drop', 'if_open': True})
        if status == 200:
            return True, answer['notification']
        if status == 409 and self.w.admin(f'payments/{payment_no}')[1]['status'] == 'succeeded':
            return True, None   # paid before a crash of the channel hid the answer
        return False, None

    def deliver(self, client, notification, times):
        for i in range(times):
            ack = client.one('SELECT payflow.handle_notification(%s, %s::jsonb, %s) AS a',
                             (CHANNELS[self.kind][0], json.dumps(notification['headers']),
                              notification['body']))['a']
            if ack['status'] != 200:
                raise Fatal(f'a valid callback was not acknowledged: {ack}')
            if i + 1 < times:
                time.sleep(self.rng.random() * 0.5)

    # Each scenario: one order, as an application and its users make it.
    def dropped_callback(self, s):
        order, _ = self.checkout(self.app, s)
        no, _ = self.begin(self.app, order, 'a1')
        taken, _ = self.pay(no)
        self.w.count(s, 'taken, callback dropped' if taken else 'not taken')
        if self.rng.random() < 0.5:
            self.app.call('SELECT payflow.check_now(%s)', (no,))

    def callback_once(self, s):
        self._callback(s, 1)

    def callback_repeated(self, s):
        self._callback(s, self.rng.randint(2, 4))

    def _callback(self, s, times):
        order, _ = self.checkout(self.app, s)
        no, _ = self.begin(self.app, order, 'a1')
        taken, notification = self.pay(no)
        if notification is None:
            self.w.count(s, 'callback lost with the channel' if taken else 'not taken')
            return
        if self.rng.random() < 0.3:
            # the client reports the success too, before the callback comes
            view = self.w.admin(f'payments/{no}')[1]
            self.app.call('SELECT payflow.mark_paid(%s, %s, %s)', (no, view['txn_id'], view['paid_amount']))
            self.w.count(s, 'mark_paid by the app as well')
        self.deliver(self.app, notification, times)
        self.w.count(s, f'callback delivered {times}x')

    def two_attempts_paid(self, s):
        order, _ = self.checkout(self.app, s)
        first, _ = self.begin(self.app, order, 'a1')
        _, late = self.pay(first)    # paid, but the app never heard: the user tries again
        try:
            second, _ = self.begin(self.app, order, 'a2')
        except AppError as e:
            # the worker found the first payment already: the order is paid
            self.w.count(s, f'second attempt refused ({e.code})')
            return
        taken, notification = self.pay(second)
        if notification is not None:
            self.deliver(self.app, notification, 1)
        self.w.count(s, 'both taken' if taken else 'second attempt closed first')
        if late is not None and self.rng.random() < 0.5:
            self.deliver(self.app, late, 1)    # the first callback comes after all
            self.w.count(s, 'first callback delivered late')

    def app_failed_then_paid(self, s):
        order, _ = self.checkout(self.app, s)
        no, _ = self.begin(self.app, order, 'a1')
        self.app.call('SELECT payflow.mark_failed(%s, %s)', (no, 'the client said declined'))
        taken, _ = self.pay(no)
        self.w.count(s, 'taken after mark_failed' if taken else 'closed before paid: paid again')
        if not taken:
            # the worker closed it first: the user pays with a new attempt
            no, _ = self.begin(self.app, order, 'a2')
            taken, notification = self.pay(no)
            if notification is not None:
                self.deliver(self.app, notification, 1)

    def partial_refunds(self, s):
        order, _ = self.checkout(self.app, s)
        no, amount = self.begin(self.app, order, 'a1')
        taken, notification = self.pay(no)
        if notification is not None:
            self.deliver(self.app, notification, 1)
        elif taken:
            # the app learns from its client instead: mark_paid with the channel's word
            view = self.w.admin(f'payments/{no}')[1]
            self.app.call('SELECT payflow.mark_paid(%s, %s, %s)', (no, view['txn_id'], view['paid_amount']))
        refunds = self.rng.randint(1, 2)
        left = amount
        for i in range(refunds):
            part = max(1, left // 3) if i + 1 < refunds or self.rng.random() < 0.7 else left
            done = 'SELECT id FROM payflow.refunds WHERE order_id = %s AND reason = %s ORDER BY id OFFSET %s'
            try:
                self.app.call('SELECT id FROM payflow.request_refund(%s, %s)', (order, part),
                              lookup=(done, (order, 'merchant', i)))
            except AppError as e:
                self.w.count(s, f'refund refused ({e.code})')
                return
            left -= part
            if left == 0:
                break
        self.w.count(s, f'{i + 1} refund(s)')

    def expiry(self, s):
        order, _ = self.checkout(self.short, s)
        try:
            no, _ = self.begin(self.short, order, 'a1')
        except AppError as e:
            self.w.count(s, f'expired before the attempt ({e.code})')
            return
        if self.rng.random() < 0.3:
            time.sleep(3 + self.rng.random() * 3)   # the user pays around the deadline
            taken, notification = self.pay(no)
            self.w.count(s, 'paid late' if taken else 'late payment refused (closed)')
            if notification is not None and self.rng.random() < 0.5:
                self.deliver(self.short, notification, 1)
                self.w.count(s, 'late callback delivered')
            if taken:   # before the worker expired it, the order takes the money
                self.w.expect[order] = {'expired', 'paid'}
        else:
            self.w.count(s, 'never paid')

    def cancel(self, s):
        order, _ = self.checkout(self.app, s)
        no, _ = self.begin(self.app, order, 'a1')
        try:
            self.app.call('SELECT status FROM payflow.cancel_order(%s, %s)', (order, 'changed my mind'))
        except AppError as e:
            self.w.count(s, f'cancel refused ({e.code})')
            return
        if self.rng.random() < 0.4:
            taken, notification = self.pay(no)    # the user pays in the other tab anyway
            self.w.count(s, 'paid after cancel' if taken else 'payment refused (closed)')
            if notification is not None and self.rng.random() < 0.5:
                self.deliver(self.app, notification, 1)
                self.w.count(s, 'callback after cancel delivered')
        else:
            self.w.count(s, 'cancelled unpaid')

    def run(self):
        names = list(SCENARIOS)
        weights = [SCENARIOS[n][0] for n in names]
        while not self.w.stop_load.is_set():
            s = self.rng.choices(names, weights)[0]
            self.kind = self.rng.choices(list(CHANNELS), [c[2] for c in CHANNELS.values()])[0]
            try:
                getattr(self, s)(s)
            except AppError as e:
                self.w.count(s, f'refused {e.code}')
            except Fatal as e:
                with self.w.lock:
                    self.w.errors.append(f'load {self.index}: {e}')
                self.w.stop_load.set()
            except Exception as e:   # an error an application would not expect
                with self.w.lock:
                    self.w.errors.append(f'load {self.index}, {s}: {type(e).__name__}: {e}')
            time.sleep(self.rng.random() * self.w.args.think)


def cron(w, seed):
    """CALL payflow.reconcile() every second or two, as pg_cron would, beside
    the worker: two reconcilers, and this one's backend killed now and then."""
    rng = random.Random(seed)
    ops = Client(w, 'campaign_ops', rng)
    while not w.stop_load.is_set():
        try:
            ops.call('CALL payflow.reconcile(200)')
            with w.lock:
                w.cron_passes += 1
        except AppError as e:
            with w.lock:
                w.errors.append(f'reconcile(): {e}')
        except Fatal as e:
            with w.lock:
                w.errors.append(f'reconcile(): {e}')
            return
        time.sleep(rng.uniform(0.5, 2))


# ------------------------------------------------------------------ chaos

class Chaos:
    def __init__(self, world, seed):
        self.w = world
        self.rng = random.Random(seed)
        self.kind = 0
        self.conn = None

    def sql(self, query):
        for _ in range(3):
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = self.w.wait_db()
                cur = self.conn.cursor()
                cur.execute(query)
                return cur.fetchall()
            except psycopg2.Error:
                self.conn = None
                time.sleep(0.2)
        return []

    def poll(self, query, tries, pause):
        for _ in range(tries):
            rows = self.sql(query)
            if rows:
                return rows
            time.sleep(pause)
        return []

    def kill_pid(self, pid):
        try:
            os.kill(pid, signal.SIGKILL)
            return True
        except (ProcessLookupError, TypeError):
            return False

    def kill(self, kind):
        w = self.w
        if kind == 'postmaster':
            pid = w.postmaster_pid()
            if not self.kill_pid(pid):
                return False
            self.conn = None
            while alive(pid):
                time.sleep(0.02)
            w.start_postgres()
            return True
        if kind == 'channel':
            w.channel_proc.kill()
            w.channel_proc.wait()
            w.start_channel()
            return True
        if kind == 'worker':
            any_pid = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'"
            # in the middle of a pass if it is in one within a second
            rows = self.poll(any_pid + " AND state = 'active'", 20, 0.05) or self.poll(any_pid, 50, 0.1)
        else:
            # a backend of the load, preferably one inside a statement
            rows = self.poll("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
                             " AND usename LIKE 'campaign_%' ORDER BY state = 'active' DESC, random() LIMIT 3",
                             50, 0.1)
        if not rows:
            return False
        if not self.kill_pid(self.rng.choice(rows)[0]):
            return False
        self.conn = None
        return True

    def fault(self):
        mode = self.rng.choice(['5xx', 'timeout', 'timeout', 'slow', 'garbage'])
        body = {'mode': mode, 'count': self.rng.randint(1, 3),
                'path_prefix': self.rng.choice(['/http_json/', '/v1/'])}
        if mode == 'timeout':
            body.update(delay_ms=1500, execute=self.rng.random() < 0.7)
        elif mode == 'slow':
            body.update(delay_ms=self.rng.choice([200, 600]))
        elif mode == 'garbage':
            body.update(variant=self.rng.randint(0, 2))
        self.w.admin('faults', body, deadline_s=10)
        # refunds done at once, or accepted and done on their first query
        self.w.admin('config', {'refund_mode': self.rng.choice(['succeed', 'pending'])}, deadline_s=10)
        with self.w.lock:
            self.w.faults += 1

    def run(self):
        a = self.w.args
        next_fault = time.time() + self.rng.uniform(1, 3)
        next_kill = time.time() + self.rng.uniform(a.kill_min, a.kill_max)
        while not self.w.stop_chaos.is_set():
            now = time.time()
            try:
                if now >= next_fault:
                    self.fault()
                    next_fault = time.time() + self.rng.uniform(1, 4)
                if now >= next_kill:
                    kind = KILL_KINDS[self.kind % len(KILL_KINDS)]
                    done = self.kill(kind)
                    with self.w.lock:
                        if done:
                            self.w.kills[kind] += 1
                            self.kind += 1
                        else:
                            self.w.kill_misses[kind] += 1
                    next_kill = time.time() + self.rng.uniform(a.kill_min, a.kill_max)
            except Fatal as e:
                with self.w.lock:
                    self.w.errors.append(f'chaos: {e}')
                self.w.stop_load.set()
                return
            time.sleep(0.05)


# ------------------------------------------------------------ the books

def drain(w, timeout_s):
    """Wait until payflow has nothing left to do: no open attempt, no
    unfinished refund, no check queued, no order awaiting payment."""
    conn = w.wait_db()
    cur = conn.cursor()
    left = None
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            cur.execute("""
                SELECT (SELECT count(*) FROM payflow.pending_checks) AS checks,
                       (SELECT count(*) FROM payflow.orders WHERE status = 'awaiting_payment') AS awaiting,
                       (SELECT count(*) FROM payflow.payments p JOIN payflow.statuses s
                          ON s.entity = 'payment' AND s.status = p.status WHERE s.open) AS open_payments,
                       (SELECT count(*) FROM payflow.refunds WHERE status NOT IN ('succeeded', 'failed')) AS open_refunds""")
            left = cur.fetchone()
        except psycopg2.Error:
            conn = w.wait_db()
            cur = conn.cursor()
            continue
        if left == (0, 0, 0, 0):
            conn.close()
            return None
        time.sleep(0.5)
    conn.close()
    return ('the worker did not finish within %ds: %d checks queued, %d orders awaiting payment, '
            '%d attempts open, %d refunds unfinished' % ((timeout_s,) + tuple(left)))


def books(w):
    """Compare payflow's books with the channel's record; list violations."""
    v = []
    conn = w.wait_db()
    cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
    cur.execute("SELECT to_regprocedure('payflow.verify()') IS NOT NULL AS has")
    has_verify = cur.fetchone()['has']
    if has_verify:
        cur.execute('SELECT * FROM payflow.verify()')
        for row in cur.fetchall():
            v.append(f'verify(): {dict(row)}')
    cur.execute('SELECT * FROM payflow.orders')
    orders = {r['id']: r for r in cur.fetchall()}
    cur.execute('SELECT * FROM payflow.payments')
    payments = {r['payment_no']: r for r in cur.fetchall()}
    cur.execute('SELECT * FROM payflow.refunds')
    refunds = {r['refund_no']: r for r in cur.fetchall()}
    cur.execute('SELECT status, count(*) FROM payflow.orders GROUP BY 1 ORDER BY 1')
    order_status = {r['status']: r['count'] for r in cur.fetchall()}
    conn.close()
    status, listing = w.admin('payments')
    channel = {p['payment_no']: p for p in listing['payments']}

    channel_refunds = {}
    for no, cp in channel.items():
        pf = payments.get(no)
        refunds_here = [r for r in cp['refunds'] if r['status'] == 'succeeded']
        for r in cp['refunds']:
            channel_refunds[r['refund_no']] = (cp, r)
        for rno, n in cp['executions_by_refund_no'].items():
            if n != 1:
                v.append(f'{no}: refund {rno} executed {n} times at the channel')
        taken = cp['status'] == 'succeeded'
        refunded = sum(r['amount'] for r in refunds_here)
        if pf is None:
            if taken or cp['refunds']:
                v.append(f'{no}: the channel took or refunded a payment payflow does not know')
            continue
        if not taken:
            if cp['refunds']:
                v.append(f'{no}: refunded at the channel but never taken')
            if pf['status'] == 'succeeded':
                v.append(f'{no}: payflow applied a payment the channel never took ({cp["status"]})')
            continue
        if pf['status'] != 'succeeded':
            v.append(f'{no}: taken at the channel ({cp["paid_amount"]}) but payflow has it {pf["status"]}')
            continue
        order = orders[pf['order_id']]
        if pf['refund_needed']:
            if len(refunds_here) != 1 or refunded != cp['paid_amount']:
                v.append(f'{no}: surplus payment {cp["paid_amount"]} not refunded exactly once '
                         f'({len(refunds_here)} refunds, {refunded} back)')
        else:
            if order['status'] not in ('paid', 'partially_refunded', 'refunded') or \
                    order['paid_amount'] != cp['paid_amount']:
                v.append(f'{no}: taken but not applied to order {order["id"]} '
                         f'({order["status"]}, paid {order["paid_amount"]})')
            if refunded != order['refunded_amount']:
                v.append(f'{no}: channel refunded {refunded}, order {order["id"]} says {order["refunded_amount"]}')
    for rno, r in refunds.items():
        at = channel_refunds.get(rno)
        if r['status'] == 'succeeded':
            if at is None or at[1]['status'] != 'succeeded' or at[1]['amount'] != r['amount']:
                v.append(f'refund {rno}: succeeded in payflow, not at the channel')
    for rno, (cp, cr) in channel_refunds.items():
        r = refunds.get(rno)
        if r is None or (cr['status'] == 'succeeded' and r['status'] != 'succeeded'):
            v.append(f'refund {rno} of {cp["payment_no"]}: {cr["status"]} at the channel, '
                     f'{r["status"] if r else "unknown"} in payflow')
    by_order = {}
    for pf in payments.values():
        by_order.setdefault(pf['order_id'], []).append(pf)
    for oid, order in orders.items():
        if order['status'] in ('expired', 'cancelled'):
            for pf in by_order.get(oid, []):
                cp = channel.get(pf['payment_no'])
                if cp is None or cp['status'] == 'pending':
                    v.append(f'{pf["payment_no"]}: order {oid} {order["status"]}, '
                             f'attempt still {cp["status"] if cp else "unknown"} at the channel')
        scenario = w.orders.get(oid)
        if scenario and order['status'] not in w.expect.get(oid, SCENARIOS[scenario][1]):
            v.append(f'order {oid} ({scenario}) ended {order["status"]}')
    unknown_orders = set(orders) - set(w.orders)
    if unknown_orders:
        v.append(f'{len(unknown_orders)} orders the load does not know (a checkout applied twice?)')
    return v, has_verify, len(channel), order_status


# ------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--pgbin', required=True, help='bin directory of the PostgreSQL 15 with payflow installed')
    p.add_argument('--seed', type=int, default=int(os.environ.get('CAMPAIGN_SEED', '0')) or None)
    p.add_argument('--payments', type=int, default=100, help='at least this many orders')
    p.add_argument('--kills', type=int, default=10, help='at least this many kills of each kind')
    p.add_argument('--clients', type=int, default=4)
    p.add_argument('--think', type=float, default=0.1, help='max pause between a client\'s orders (s)')
    p.add_argument('--kill-min', type=float, default=0.8)
    p.add_argument('--kill-max', type=float, default=2.0)
    p.add_argument('--max-seconds', type=float, default=300, help='the load stops then, targets met or not')
    p.add_argument('--drain-seconds', type=float, default=180)
    p.add_argument('--fsync', action='store_true')
    p.add_argument('--summary', help='write the JSON summary here too')
    p.add_argument('--keep', action='store_true', help='keep the work directory')
    a = p.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 2**31)
    log(f'seed {seed} (reproduce with CAMPAIGN_SEED={seed}); targets: {a.payments} orders, '
        f'{a.kills} kills of each kind ({", ".join(KILL_KINDS)})')
    master = random.Random(seed)
    w = World(a)
    rc = 1
    try:
        w.setup()
        log(f'cluster on {w.sockdir}:{w.pgport}, channel server on {w.channel_url} (journal), '
            f'{a.clients} clients')
        started = time.time()
        loads = [Load(w, i, master.randrange(2**31)) for i in range(a.clients)]
        threads = [threading.Thread(target=l.run, daemon=True) for l in loads]
        threads.append(threading.Thread(target=cron, args=(w, master.randrange(2**31)), daemon=True))
        chaos = threading.Thread(target=Chaos(w, master.randrange(2**31)).run, daemon=True)
        for t in threads:
            t.start()
        chaos.start()
        last = 0
        while not w.stop_load.is_set():
            time.sleep(0.5)
            with w.lock:
                orders, kills = sum(w.scenarios.values()), dict(w.kills)
            elapsed = time.time() - started
            if elapsed - last >= 10:
                last = elapsed
                log(f'{elapsed:.0f}s: {orders} orders, {w.attempts} attempts, kills {kills}')
            if orders >= a.payments and min(kills.values()) >= a.kills:
                break
            if elapsed > a.max_seconds:
                w.errors.append(f'targets not reached in {a.max_seconds:.0f}s '
                                f'({orders} orders, kills {kills})')
                break
        w.stop_load.set()
        w.stop_chaos.set()
        chaos.join(timeout=120)
        for t in threads:
            t.join(timeout=300)
        load_seconds = time.time() - started
        # the end of the storm: both up, no fault pending
        if w.postmaster_pid() is None or not alive(w.postmaster_pid()):
            w.start_postgres()
        w.admin('faults', {'mode': 'none'})
        log(f'load stopped after {load_seconds:.0f}s; draining')
        t0 = time.time()
        stuck = drain(w, a.drain_seconds)
        drain_seconds = time.time() - t0
        violations = list(w.errors)
        if stuck:
            violations.append(stuck)
        found, has_verify, channel_payments, order_status = books(w)
        violations += found
        summary = {
            'seed': seed,
            'orders_by_scenario': w.scenarios,
            'orders_by_channel': w.by_channel,
            'orders': sum(w.scenarios.values()),
            'payment_attempts': w.attempts,
            'payments_at_channel': channel_payments,
            'outcomes': {f'{s}: {what}': n for (s, what), n in sorted(w.outcomes.items())},
            'order_status': order_status,
            'kills': w.kills,
            'kill_misses': w.kill_misses,
            'faults_injected': w.faults,
            'reconcile_calls': w.cron_passes,
            'reconnects': w.reconnects,
            'calls_with_unknown_outcome': w.uncertain,
            'load_seconds': round(load_seconds),
            'drain_seconds': round(drain_seconds),
            'verify_ran': has_verify,
            'violations': len(violations),
        }
        print('# --- crash campaign: orders by scenario')
        for s, n in w.scenarios.items():
            print(f'#   {s:22} {n}')
        print(f'# --- orders by channel protocol: {w.by_channel}')
        print('# --- outcomes')
        for k, n in summary['outcomes'].items():
            print(f'#   {k:60} {n}')
        print(f'# --- kills: {w.kills} (not possible at that moment: {w.kill_misses}); '
              f'faults injected: {w.faults}; CALL payflow.reconcile() beside the worker: {w.cron_passes}')
        print(f'# --- {summary["orders"]} orders, {w.attempts} attempts, {channel_payments} payments at '
              f'the channel, final order statuses {order_status}')
        print(f'# --- {w.reconnects} reconnects, {w.uncertain} calls with an unknown outcome resolved; '
              f'load {load_seconds:.0f}s, drain {drain_seconds:.0f}s; '
              f'verify() {"ran" if has_verify else "absent"}')
        print(f'# --- violations: {len(violations)}')
        for msg in violations[:50]:
            print(f'#   VIOLATION {msg}')
        print('SUMMARY ' + json.dumps(summary, sort_keys=True))
        if a.summary:
            with open(a.summary, 'w') as f:
                json.dump(summary, f, sort_keys=True, indent=1)
        rc = 0 if not violations else 1
    except Fatal as e:
        print(f'# FATAL {e}')
    finally:
        w.teardown(a.keep or rc != 0)
    return rc


if __name__ == '__main__':
    sys.exit(main())
