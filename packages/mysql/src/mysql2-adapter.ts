// What this package relies on in mysql2 beyond its documented API, in one place. Tested against the lowest and
// the latest mysql2 3.x this package supports.
//
// Public and relied on: `connection.state` and `connection.fatalError` (3.16+), `threadId`, pool connections'
// `release()`/`destroy()`, the promise wrapper's `.connection` (the core connection), the pool's `config`
// (`connectionLimit`, `idleTimeout`), `gracefulEnd`, `ConnectionConfig` and its `parseUrl` (exported, untyped).
// Not public, and confined here:
// - `stream`: the core connection's socket. mysql2's destroy() only half-closes it (FIN) and leaves the commands in
//   flight pending forever; destroying the socket with an error fails them.
// - `pool._freeConnections`: whether an acquire may open a connection.
// - `pool.config.connectionConfig`: the options the pool copies for each new connection (rotated secrets), and how
//   mysql2's ConnectionConfig reads the secret options (`password1` folded into `password`, empty strings dropped).
//   A new pool per credential generation would be the public way, but an IAM token is new on every generation:
//   each invocation that had to connect would retire the warm connections of the others (Managed Instances).
// - `_command`/`_commands`: the command queue (whether a statement is in flight; a query stream to fail).
// - Which config keys mysql2 knows: only its console warning says (optionsMysql2Ignores).
// How long a pooled connection has been idle is this package's own record (pool-cache.ts), not mysql2's.
import type { Socket } from "node:net";
import mysql, { type Connection as CoreConnection } from "mysql2";
import type { Connection, Pool } from "mysql2/promise";

/** mysql2's core (callback) connection, behind a promise connection. */
export type Core = CoreConnection & {
	readonly state?: string;
	readonly fatalError?: unknown;
	readonly stream?: Socket;
};

export const coreOf = (connection: Connection): Core =>
	(connection as unknown as { connection: Core }).connection;

/** The connection cannot run another statement: it failed, or it is closing or closed. */
export const isDead = (core: Core): boolean => {
	if (typeof core.state === "string") return core.state === "error" || core.state === "disconnected";
	return Boolean(core.fatalError || core.stream?.destroyed);
};

/** An error that means the connection is gone (not a statement's own error). */
export const isFatal = (error: unknown): boolean =>
	(error as { fatal?: unknown } | null)?.fatal === true ||
	["ER_CONNECTION_KILLED", "ER_SERVER_SHUTDOWN", "PROTOCOL_CONNECTION_LOST", "ECONNRESET", "EPIPE"].includes(
		(error as { code?: string } | null)?.code ?? "",
	);

/**
 * Closes the socket now, failing the commands in flight with `reason`: a handler still awaiting a query gets an
 * error instead of a promise that never settles. A pooled connection leaves its pool.
 */
export const destroyHard = (core: Core, reason: Error): void => {
	try {
		core.destroy();
	} catch {
		// already closed
	}
	core.stream?.destroy(reason);
};

/** Gives a pooled connection back to its pool (the promise wrapper's `release()`, which its type leaves out). */
export const releaseConnection = (connection: Connection): void => {
	(connection as unknown as { release(): void }).release();
};

/** Resolves when the connection's socket has closed (the server has ended the session). */
export const socketClosed = (core: Core): Promise<void> => {
	const socket = core.stream;
	if (!socket || socket.destroyed) return Promise.resolve();
	return new Promise((resolve) => socket.once("close", () => resolve()));
};

/**
 * True when acquiring from this pool right now may open a new connection. When the internals are not there it
 * answers true (the config function is then simply called on every acquire).
 */
export const mayOpenConnection = (pool: Pool): boolean => {
	const free = (pool.pool as unknown as { _freeConnections?: { length?: unknown } })._freeConnections?.length;
	return typeof free !== "number" || free === 0;
};

/** The secret options of a mysql2 config: a password (or `password1`, its other name) and the further factors. */
export interface ConnectionSecrets {
	readonly password?: unknown;
	readonly password1?: unknown;
	readonly password2?: unknown;
	readonly password3?: unknown;
	readonly passwordSha1?: unknown;
}

/**
 * Makes the pool's next new connections authenticate with these secrets (a rotated password, a fresh IAM token).
 * mysql2 copies `pool.config.connectionConfig` for every connection it opens, so that is where they go, read the
 * way mysql2's ConnectionConfig reads them: `password1` is another name for `password`, and an empty value is none.
 * Open connections are unaffected: a password is only checked when a connection authenticates. Returns false when
 * the pool does not have that config (a mysql2 that moved it).
 */
export const setNextConnectionSecrets = (pool: Pool, secrets: ConnectionSecrets): boolean => {
	const connectionConfig = (
		pool.pool as unknown as { config?: { connectionConfig?: Record<string, unknown> } }
	).config?.connectionConfig;
	if (!connectionConfig) return false;
	connectionConfig.password = secrets.password || secrets.password1 || undefined;
	connectionConfig.password2 = secrets.password2 || undefined;
	connectionConfig.password3 = secrets.password3 || undefined;
	connectionConfig.passwordSha1 = secrets.passwordSha1 || undefined;
	return true;
};

/** The pool's own idleTimeout and connectionLimit, as mysql2 resolved them. */
export const poolLimits = (pool: Pool): { idleTimeout: number; connectionLimit: number } =>
	(pool.pool as unknown as { config: { idleTimeout: number; connectionLimit: number } }).config;

/**
 * True while the connection has a command running or queued: a statement of ours, or one the handler sent on the
 * raw connection (a query stream). Reads `_command` and `_commands`, mysql2's command queue.
 */
export const commandInFlight = (core: Core): boolean => {
	const internals = core as unknown as { _command?: unknown; _commands?: { length?: number } };
	return Boolean(internals._command) || (internals._commands?.length ?? 0) > 0;
};

/**
 * Fails the command in flight with the connection's fatal `error` when mysql2 will not: mysql2 tells only a
 * command with a callback that its connection was lost (a server crash, a reset network path), so a query
 * stream (`query(sql).stream()`, no callback) would neither end nor fail, and a response body reading it would
 * hang until Lambda's timeout. Called from the connection's 'error' listener, where mysql2 has left such a
 * command as the current one. Only a command that listens for errors is told (a stream does).
 */
export const failCommandInFlight = (core: Core, error: unknown): void => {
	const command = (core as unknown as { _command?: unknown })._command as
		| { onResult?: unknown; emit?: unknown; listenerCount?: (event: string) => number }
		| undefined;
	if (!command || command.onResult || typeof command.emit !== "function") return;
	if ((command.listenerCount?.("error") ?? 0) === 0) return;
	(command.emit as (event: string, error: unknown) => boolean).call(command, "error", error);
};

// mysql2 has no public list of the options it accepts. It does say, when a ConnectionConfig is built, which keys it
// does not know: one console.error each ("Ignoring invalid configuration option passed to Connection: <key>"), and
// it ignores them. That verdict is what makes a typo visible at cold start (and an option of a newer mysql2 valid):
// the messages are taken off the console for the duration of the (synchronous) constructor.
const ignoredOption = /^Ignoring invalid configuration option passed to Connection: (.+?)\. /;

// mysql2 exports its ConnectionConfig (and its URL parser) at runtime; its type declarations leave them out.
const { ConnectionConfig } = mysql as unknown as {
	ConnectionConfig: { new (options: object): object; parseUrl(url: string): Record<string, unknown> };
};

/** The keys of `options` that the installed mysql2 does not know (and would ignore). */
export const optionsMysql2Ignores = (options: Record<string, unknown>): string[] => {
	const ignored: string[] = [];
	const original = console.error;
	console.error = (...args: unknown[]) => {
		const key = ignoredOption.exec(String(args[0]))?.[1];
		if (key === undefined) original.apply(console, args);
		else ignored.push(key);
	};
	try {
		new ConnectionConfig(options);
	} catch {
		// A value mysql2 cannot use (an unknown charset) fails at the first connect, with mysql2's own message.
	} finally {
		console.error = original;
	}
	return ignored;
};

/** mysql2's own reading of a mysql:// URL (`ConnectionConfig.parseUrl`), without the parts the URL leaves out. */
export const parseMysqlUrl = (uri: string): Record<string, unknown> => {
	const parsed = ConnectionConfig.parseUrl(uri);
	const present: Record<string, unknown> = {};
	for (const [key, value] of Object.entries(parsed)) {
		if (value !== undefined && value !== "" && !Number.isNaN(value)) present[key] = value;
	}
	return present;
};

let optionNames: string[] | undefined;

/**
 * Option names the installed mysql2 knows, for "did you mean": the fields of a ConnectionConfig that mysql2 also
 * accepts as options, and the pool's own. A suggestion only: what is valid is what optionsMysql2Ignores says.
 */
export const mysql2OptionNames = (): string[] => {
	if (optionNames) return optionNames;
	const fields = [
		...Object.keys(new ConnectionConfig({})),
		"connectionLimit",
		"maxIdle",
		"idleTimeout",
		"queueLimit",
		"waitForConnections",
		"resetOnRelease",
		"uri",
		"charset",
	];
	const ignored = new Set(optionsMysql2Ignores(Object.fromEntries(fields.map((name) => [name, undefined]))));
	optionNames = fields.filter((name) => !ignored.has(name));
	return optionNames;
};

/**
 * Sends COM_RESET_CONNECTION through the core connection's callback API (`reset(cb)`, the same command as the
 * promise wrapper's `reset()`, without the stack it captures for every call: tens of microseconds on the
 * invocation's critical path).
 */
export const sendReset = (core: Core): Promise<void> =>
	new Promise((resolve, reject) => {
		(core as unknown as { reset(callback: (error: unknown) => void): void }).reset((error) =>
			error ? reject(error) : resolve(),
		);
	});
