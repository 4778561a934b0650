// A throwaway MySQL-compatible server for tests, the demo and the benchmarks.
//
// Order of preference: MYSQL_URL (an account that may create users and databases); else `mariadbd`/`mysqld`
// found on PATH or in the usual sbin folders, started with its own datadir in a temp directory on a free
// loopback port; else, as root on Debian/Ubuntu, `apt-get install mariadb-server` first. The system service is
// never started or used: the server is ours, and it is stopped and its datadir removed on every exit path.
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import mysql from "mysql2/promise";
import { atLastResort } from "./last-resort.ts";

export interface MysqlServer {
	/** URL of an account that may create users and databases (root of the throwaway server). */
	adminUrl: string;
	host: string;
	port: number;
	version: string;
	/** True when we started the server (and so may restart it); false for MYSQL_URL. */
	owned: boolean;
	/** Stops the server and removes its datadir. Idempotent. */
	stop(): Promise<void>;
	/** Restarts the server in place (same port, same data), as a database failover would. */
	restart(): Promise<void>;
}

const DATADIR_PREFIX = "middy-conn-mysql-";
const SBIN_DIRS = ["/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin", "/opt/homebrew/bin"];

const HOW_TO_PROVIDE =
	"No MySQL-compatible server found: set MYSQL_URL=mysql://root:password@127.0.0.1:3306 (an account that may create users and databases), or install mariadb-server (apt-get install -y mariadb-server) so that `mariadbd` is on PATH.";

const findBinary = (names: string[]): string | undefined => {
	const dirs = [...(process.env.PATH ?? "").split(delimiter), ...SBIN_DIRS];
	for (const name of names) {
		for (const dir of dirs) {
			if (dir && existsSync(join(dir, name))) return join(dir, name);
		}
	}
	return undefined;
};

const isDebianLike = () => existsSync("/etc/debian_version");

const installMariadb = () => {
	// Non-interactive, and with policy-rc.d-free containers in mind: the package may try to start its service,
	// which we neither need nor use; a failure to start it is not a failure to install.
	process.stderr.write("[test-harness] installing mariadb-server with apt-get (once per machine)…\n");
	const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
	const update = spawnSync("apt-get", ["update", "-qq"], { stdio: "ignore", env });
	if (update.status !== 0)
		throw new Error(`apt-get update failed (exit ${update.status}). ${HOW_TO_PROVIDE}`);
	const install = spawnSync(
		"apt-get",
		["install", "-y", "-qq", "--no-install-recommends", "mariadb-server"],
		{
			stdio: "ignore",
			env,
		},
	);
	if (install.status !== 0) throw new Error(`apt-get install mariadb-server failed. ${HOW_TO_PROVIDE}`);
};

const locateServer = (): { server: string; installDb: string | undefined } => {
	let server = findBinary(["mariadbd", "mysqld"]);
	if (!server && process.getuid?.() === 0 && isDebianLike()) {
		installMariadb();
		server = findBinary(["mariadbd", "mysqld"]);
	}
	if (!server) throw new Error(HOW_TO_PROVIDE);
	const installDb = server.endsWith("mariadbd")
		? findBinary(["mariadb-install-db", "mysql_install_db"])
		: undefined;
	return { server, installDb };
};

export const freePort = (): Promise<number> =>
	new Promise((resolve, reject) => {
		const probe = createServer();
		probe.unref();
		probe.on("error", reject);
		probe.listen(0, "127.0.0.1", () => {
			const address = probe.address();
			probe.close(() => (typeof address === "object" && address ? resolve(address.port) : reject()));
		});
	});

const isAlive = (pid: number) => {
	try {
		process.kill(pid, 0);
		return true;
	} catch {
		return false;
	}
};

// A run that was SIGKILLed cannot clean up after itself; the next run removes what it left behind.
const reapStaleDatadirs = () => {
	for (const entry of readdirSync(tmpdir())) {
		if (!entry.startsWith(DATADIR_PREFIX)) continue;
		const dir = join(tmpdir(), entry);
		try {
			const owner = Number(readFileSync(join(dir, "owner.pid"), "utf8"));
			if (owner && isAlive(owner)) continue;
			const serverPid = Number(readFileSync(join(dir, "data", "server.pid"), "utf8"));
			if (serverPid && isAlive(serverPid)) process.kill(serverPid, "SIGKILL");
		} catch {
			// no pid files: an interrupted start; remove it
		}
		rmSync(dir, { recursive: true, force: true });
	}
};

const waitForExit = async (child: ChildProcess, ms: number) => {
	if (child.exitCode !== null || child.signalCode !== null) return true;
	return Promise.race([
		new Promise<boolean>((resolve) => child.once("exit", () => resolve(true))),
		// unref'd: a server that stopped in time must not keep the caller's process alive for the rest of `ms`
		sleep(ms, false, { ref: false }),
	]);
};

const connectAsRoot = async (socketPath: string, deadline: number, errorLog: string) => {
	let lastError: unknown;
	while (Date.now() < deadline) {
		try {
			return await mysql.createConnection({ socketPath, user: "root", connectTimeout: 1000 });
		} catch (error) {
			lastError = error;
			await sleep(50);
		}
	}
	const log = existsSync(errorLog) ? readFileSync(errorLog, "utf8").split("\n").slice(-15).join("\n") : "";
	throw new Error(`MySQL server did not accept connections in time.\n${log}`, { cause: lastError });
};

export interface StartMysqlServerOptions {
	/**
	 * Always start a server of our own, even when MYSQL_URL names one: for tests that change the server's global
	 * settings (max_connections), which must never reach a server shared with anything else.
	 */
	dedicated?: boolean;
	/**
	 * Starts the server with `--max-user-connections=N`: the global limit on any one user's connections, answered
	 * with ER_TOO_MANY_USER_CONNECTIONS (an account's own MAX_USER_CONNECTIONS is ER_USER_LIMIT_REACHED). The server
	 * lets it be changed with SET GLOBAL only if it started with it non-zero. Implies `dedicated`.
	 */
	maxUserConnections?: number;
}

export const startMysqlServer = async (options: StartMysqlServerOptions = {}): Promise<MysqlServer> => {
	const { maxUserConnections } = options;
	if (
		maxUserConnections !== undefined &&
		!(Number.isSafeInteger(maxUserConnections) && maxUserConnections > 0)
	) {
		throw new TypeError(`maxUserConnections must be a positive integer, not ${maxUserConnections}`);
	}
	const url = options.dedicated || maxUserConnections !== undefined ? undefined : process.env.MYSQL_URL;
	if (url) {
		const connection = await mysql.createConnection(url);
		const [rows] = await connection.query<mysql.RowDataPacket[]>("SELECT VERSION() AS version");
		await connection.end();
		const parsed = new URL(url);
		return {
			adminUrl: url,
			host: parsed.hostname,
			port: Number(parsed.port || 3306),
			version: String(rows[0]?.version),
			owned: false,
			stop: async () => {},
			restart: async () => {
				throw new Error("cannot restart a server given by MYSQL_URL");
			},
		};
	}

	const { server, installDb } = locateServer();
	reapStaleDatadirs();
	const dir = mkdtempSync(join(tmpdir(), DATADIR_PREFIX));
	writeFileSync(join(dir, "owner.pid"), String(process.pid));
	const datadir = join(dir, "data");
	const socketPath = join(dir, "mysqld.sock");
	const errorLog = join(dir, "error.log");
	const asRoot = process.getuid?.() === 0 ? ["--user=root"] : [];

	if (installDb) {
		execFileSync(
			installDb,
			[
				"--no-defaults",
				`--datadir=${datadir}`,
				"--auth-root-authentication-method=socket",
				"--skip-test-db",
				...asRoot,
			],
			{ stdio: "ignore" },
		);
	} else {
		execFileSync(server, ["--no-defaults", "--initialize-insecure", `--datadir=${datadir}`, ...asRoot], {
			stdio: "ignore",
		});
	}

	const port = await freePort();
	const rootPassword = randomBytes(12).toString("hex");
	const args = [
		"--no-defaults",
		`--datadir=${datadir}`,
		`--socket=${socketPath}`,
		`--port=${port}`,
		"--bind-address=127.0.0.1",
		`--pid-file=${join(datadir, "server.pid")}`,
		`--log-error=${errorLog}`,
		// temp tables in our own folder: servers from other runs share /tmp and can collide on file names
		`--tmpdir=${dir}`,
		"--skip-name-resolve",
		"--skip-log-bin",
		"--max-connections=1000",
		...(maxUserConnections === undefined ? [] : [`--max-user-connections=${maxUserConnections}`]),
		"--innodb-buffer-pool-size=128M",
		"--innodb-flush-log-at-trx-commit=2",
		...asRoot,
	];

	let child: ChildProcess | undefined;
	const launch = async () => {
		child = spawn(server, args, { stdio: "ignore" });
		const root = await connectAsRoot(socketPath, Date.now() + 30_000, errorLog);
		return root;
	};

	let stopped = false;
	const kill = () => {
		if (child && child.exitCode === null) child.kill("SIGKILL");
	};
	const removeDir = () => rmSync(dir, { recursive: true, force: true });
	// Last resort for abrupt exits: a synchronous kill and removal.
	const onExit = () => {
		kill();
		removeDir();
	};
	const forgetOnExit = atLastResort(onExit);

	const shutdown = async () => {
		if (!child) return;
		const current = child;
		current.kill("SIGTERM");
		if (!(await waitForExit(current, 10_000))) current.kill("SIGKILL");
		await waitForExit(current, 5_000);
	};

	try {
		const root = await launch();
		// root keeps unix_socket authentication for the harness; tests get a TCP root account with a password.
		await root.query("CREATE USER 'root'@'127.0.0.1' IDENTIFIED BY ?", [rootPassword]);
		await root.query("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION");
		const [rows] = await root.query<mysql.RowDataPacket[]>("SELECT VERSION() AS version");
		await root.end();
		return {
			adminUrl: `mysql://root:${rootPassword}@127.0.0.1:${port}`,
			host: "127.0.0.1",
			port,
			version: String(rows[0]?.version),
			owned: true,
			stop: async () => {
				if (stopped) return;
				stopped = true;
				await shutdown();
				removeDir();
				forgetOnExit();
			},
			restart: async () => {
				await shutdown();
				const again = await launch();
				await again.end();
			},
		};
	} catch (error) {
		forgetOnExit();
		onExit();
		throw error;
	}
};
