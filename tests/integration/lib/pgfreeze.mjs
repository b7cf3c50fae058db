// A PostgreSQL cluster of a test file's own (tests/pg_tmp.sh) that the test can freeze: SIGSTOP of
// the postmaster and every server process, so that the database neither answers nor refuses. The
// shared cluster is used by other tests and must never be frozen. Whatever happens (a failed
// assertion, an exception, the runner's exit), the cluster is continued: thaw() runs on exit.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { waitFor } from './wait.mjs';

const run = promisify(execFile);
const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const PG_TMP = join(SRC, 'tests/pg_tmp.sh');

/** The one-letter state of a process ("T" once stopped, "Z" exited; "" when gone). */
function procState(pid) {
    try {
        const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return st.charAt(st.lastIndexOf(')') + 2);
    } catch {
        return '';
    }
}

/** Pids whose parent is ppid (the postmaster's server processes). */
function childrenOf(ppid) {
    const out = [];
    for (const d of readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        try {
            const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
            // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'
            const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
            if (Number(fields[1]) === ppid) out.push(Number(d));
        } catch {
            /* exited meanwhile */
        }
    }
    return out;
}

export class FreezableCluster {
    /** port only names the unix socket inside the cluster's own dir (pick one per test file). */
    constructor(port, prefix = 'tg-pg-') {
        this.port = String(port);
        this.dir = mkdtempSync(join(tmpdir(), prefix));
        this.frozen = []; // pids stopped with SIGSTOP, continued whatever happens
        this.conninfo = null;
        process.on('exit', () => this.thaw());
    }

    /** Starts the cluster (or finds it running); returns its conninfo. */
    async start() {
        const started = await run('bash', [PG_TMP, 'start', this.dir, this.port]);
        this.conninfo = started.stdout.trim().split('\n').pop();
        assert.match(this.conninfo, new RegExp(`^host=/\\S+ port=${this.port} user=postgres dbname=postgres$`));
        return this.conninfo;
    }

    async stop() {
        this.thaw();
        await run('bash', [PG_TMP, 'stop', this.dir, this.port]).catch(() => {});
        rmSync(this.dir, { recursive: true, force: true });
    }

    /** The postmaster's pid (first line of postmaster.pid in the cluster's data dir). */
    postmasterPid() {
        let cdir = this.dir;
        try {
            cdir = readFileSync(join(this.dir, 'location'), 'utf8').trim();
        } catch {
            /* the cluster lives in dir itself */
        }
        return Number(readFileSync(join(cdir, 'data/postmaster.pid'), 'utf8').split('\n')[0]);
    }

    /** Freezes the whole cluster: the postmaster first (so it forks nothing new), then its children.
     *  Returns how many processes were stopped. */
    async freeze() {
        const pm = this.postmasterPid();
        process.kill(pm, 'SIGSTOP');
        this.frozen.push(pm);
        for (const pid of childrenOf(pm)) {
            try {
                process.kill(pid, 'SIGSTOP');
                this.frozen.push(pid);
            } catch {
                /* exited meanwhile */
            }
        }
        // A signal is delivered asynchronously: wait until /proc shows every one of them stopped. A
        // backend that was exiting stays a zombie (its parent, stopped, cannot reap it) or is gone.
        await waitFor(() => this.frozen.every((pid) => ['T', 'Z', ''].includes(procState(pid))), {
            what: 'every server process to be stopped',
        });
        assert.equal(procState(this.frozen[0]), 'T', 'the postmaster is stopped');
        return this.frozen.length;
    }

    /** Restarts the cluster (a fast shutdown: every session is cut), with the options it was started
     *  with; resolves once it accepts connections again. */
    async restart() {
        let cdir = this.dir;
        try {
            cdir = readFileSync(join(this.dir, 'location'), 'utf8').trim();
        } catch {
            /* the cluster lives in dir itself */
        }
        const script = `. "${join(SRC, 'deploy/packages.sh')}"; pgbin=$(tg_pg_bindir) || exit 1
            if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); else as=(); fi
            "\${as[@]}" "$pgbin/pg_ctl" -D "$1/data" -m fast -w -t 60 restart >/dev/null`;
        await run('bash', ['-c', script, 'restart', cdir]);
    }

    thaw() {
        for (const pid of this.frozen) {
            try {
                process.kill(pid, 'SIGCONT');
            } catch {
                /* gone already */
            }
        }
        this.frozen = [];
    }

    /** One SQL statement's rows, unaligned (psql -At), as one trimmed string. */
    async sql(sql) {
        const { stdout } = await run('psql', [this.conninfo, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql]);
        return stdout.trim();
    }
}
