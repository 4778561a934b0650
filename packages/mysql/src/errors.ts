// Clear errors for what goes wrong with the connection itself. Each names the problem and the target (host:port
// and user, never a password or a token), keeps the driver's `code`, and carries the driver's error as `cause`,
// redacted: mysql2 errors can hold the connection config, and an IAM token is a password.
//
// Errors of the SQL itself (a duplicate key, a syntax error) are the application's and pass through untouched.
import { MiddyConnError } from "@middy-conn/lifecycle";
import { codeOf } from "@middy-conn/lifecycle/internal";
import { describeTarget, pkg, type Target } from "./options.ts";

/** The codes of the errors this package raises itself (connection problems keep mysql2's code). */
export const errorCodes = {
	/** A statement still running when the middleware stopped it: Middy's timeout, or the tasks' deadline. */
	interrupted: "MIDDY_CONN_MYSQL_INTERRUPTED",
	/** A statement still running when the middleware gave the connection up for another reason. */
	destroyed: "MIDDY_CONN_MYSQL_DESTROYED",
	/** With `transaction: true`: work was still in flight when the invocation ended; nothing was committed. */
	unfinished: "MIDDY_CONN_MYSQL_UNFINISHED",
	/** `context.db` used after its invocation ended. */
	closed: "MIDDY_CONN_MYSQL_CLOSED",
	/** `beginTransaction()` with the `transaction` option. */
	transactionManaged: "MIDDY_CONN_MYSQL_TRANSACTION_MANAGED",
} as const;

const messageOf = (error: unknown): string =>
	error instanceof Error ? error.message : typeof error === "string" ? error : "unknown error";

const tlsCodes = new Set([
	"HANDSHAKE_SSL_ERROR",
	"HANDSHAKE_NO_SSL_SUPPORT",
	"DEPTH_ZERO_SELF_SIGNED_CERT",
	"SELF_SIGNED_CERT_IN_CHAIN",
	"UNABLE_TO_VERIFY_LEAF_SIGNATURE",
	"UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
	"CERT_HAS_EXPIRED",
	"ERR_TLS_CERT_ALTNAME_INVALID",
]);

const connectProblem = (code: string | undefined, target: Target, cause: unknown): string => {
	const where = describeTarget(target);
	const user = target.user === undefined ? "" : ` as '${target.user}'`;
	switch (code) {
		case "ECONNREFUSED":
			return `MySQL refused the connection at ${where} (ECONNREFUSED): nothing listens on that port, or a firewall rejects it`;
		case "ENOTFOUND":
		case "EAI_AGAIN":
			return `MySQL host ${target.host} could not be resolved (${code}): check the host name, and the function's VPC DNS`;
		case "ETIMEDOUT":
			return `MySQL connection to ${where} timed out after ${target.connectTimeout} ms (ETIMEDOUT): the host is unreachable (security group, subnet route) or the server never completed the handshake`;
		case "EHOSTUNREACH":
		case "ENETUNREACH":
			return `MySQL host ${where} is unreachable (${code}): check the function's VPC, subnets and routes`;
		case "ECONNRESET":
		case "PROTOCOL_CONNECTION_LOST":
			return `MySQL at ${where} closed the connection during the handshake (${code})`;
		case "ER_ACCESS_DENIED_ERROR":
		case "ER_ACCESS_DENIED_NO_PASSWORD_ERROR":
			return `MySQL at ${where} rejected the credentials${user} (${code}): wrong password, expired IAM auth token, or unknown user`;
		case "ER_DBACCESS_DENIED_ERROR":
		case "ER_BAD_DB_ERROR":
			return `MySQL at ${where} refused database '${target.database ?? ""}'${user} (${code})`;
		case "ER_CON_COUNT_ERROR":
			return `MySQL at ${where} has too many connections (ER_CON_COUNT_ERROR): max_connections is reached; keep the function's concurrent environments (× connectionLimit in pool mode) below it, or put RDS Proxy in front (see docs/connection-budget.md)`;
		case "ER_TOO_MANY_USER_CONNECTIONS":
		case "ER_USER_LIMIT_REACHED":
			return `MySQL at ${where} refused another connection${user} (${code}): the user's connection limit is reached`;
		case "MYSQL_CLEAR_PASSWORD_NOT_ENABLED":
			return `MySQL at ${where} asked for the cleartext password plugin (RDS IAM auth)${user}: set enableCleartextPlugin: true, over TLS only (${code})`;
		default:
			if (code && tlsCodes.has(code)) {
				return `TLS handshake with MySQL at ${where} failed (${code}): ${messageOf(cause)}`;
			}
			return `Could not connect to MySQL at ${where}${user} (${code ?? "no code"}): ${messageOf(cause)}`;
	}
};

/** The connect (scoped) or acquire (pool) failed; `retries`: how often a refusal by a full server was retried. */
export const connectError = (
	cause: unknown,
	target: Target,
	secrets: readonly string[],
	retries = 0,
): MiddyConnError =>
	new MiddyConnError(
		`${connectProblem(codeOf(cause), target, cause)}${retries > 0 ? ` (still refused after ${retries} ${retries === 1 ? "retry" : "retries"}: see the connectRetry option)` : ""}`,
		{
			package: pkg,
			cause,
			secrets,
			details: targetDetails(target),
		},
	);

/** The connection died (KILL, failover, network) during or before a statement of this invocation. */
export const connectionLostError = (
	cause: unknown,
	target: Target,
	secrets: readonly string[],
): MiddyConnError =>
	new MiddyConnError(
		`MySQL connection to ${describeTarget(target)} was lost (${codeOf(cause) ?? "no code"}): ${messageOf(cause)}. The statement is not retried, since it may have been applied; the next invocation gets a new connection`,
		{ package: pkg, cause, secrets, details: { ...targetDetails(target), fatal: true } },
	);

/** The invocation ended (timeout, early response, after-closing middleware) and the handler kept using the db. */
export const closedError = (contextKey: string): MiddyConnError =>
	new MiddyConnError(
		`context.${contextKey} was used after its invocation ended and its connection was closed. Register mysqlConnection() before the middlewares that use context.${contextKey} in their after/onError (Middy runs those in reverse order), and do not use it after a timeout`,
		{ package: pkg, code: errorCodes.closed },
	);

/** COMMIT of the invocation's transaction failed: the invocation must fail. */
export const commitError = (
	cause: unknown,
	target: Target,
	secrets: readonly string[],
	outcomeKnown: boolean,
): MiddyConnError =>
	new MiddyConnError(
		outcomeKnown
			? `COMMIT of the invocation's transaction on ${describeTarget(target)} failed (${codeOf(cause) ?? "no code"}): ${messageOf(cause)}. The transaction was rolled back`
			: `COMMIT of the invocation's transaction on ${describeTarget(target)} did not complete (${codeOf(cause) ?? "no code"}): ${messageOf(cause)}. Whether it was applied is unknown`,
		{ package: pkg, cause, secrets, details: targetDetails(target) },
	);

/** Misuse: beginTransaction() while the middleware manages the transaction. */
export const managedTransactionError = (): MiddyConnError =>
	new MiddyConnError(
		"The transaction option is on: the middleware begins the transaction before the first statement, commits on success and rolls back otherwise. Do not call beginTransaction() (commit() and rollback() end the current transaction early)",
		{ package: pkg, code: errorCodes.transactionManaged },
	);

const targetDetails = (target: Target) => ({
	host: target.socketPath ?? target.host,
	port: target.port,
	user: target.user,
});

/** Work of the handler was still in flight when the invocation ended: its transaction was rolled back. */
export const unfinishedError = (target: Target | undefined): MiddyConnError =>
	new MiddyConnError(
		target
			? `The invocation's transaction on ${describeTarget(target)} was rolled back, not committed: a statement or request of the invocation was still in flight when it ended (the handler had not finished, e.g. a timeoutEarlyResponse answered for it)`
			: "The invocation's transaction was not begun, and nothing of it was committed: its first statement was still waiting for a connection when the invocation ended (the handler had not finished, e.g. a timeoutEarlyResponse answered for it)",
		{ package: pkg, code: errorCodes.unfinished, ...(target ? { details: targetDetails(target) } : {}) },
	);

/** The middleware gave the connection up (`why`: a failed connect or reset, a stale connection...). */
export const destroyedError = (why: string): MiddyConnError =>
	new MiddyConnError(`MySQL connection destroyed: ${why}`, { package: pkg, code: errorCodes.destroyed });

/** Scoped mode: the invocation ended while its connection was still being opened (the handshake, the session id). */
export const endedWhileConnectingError = (): MiddyConnError =>
	destroyedError("the invocation ended while connecting");

/** Middy's early timeout (or the background tasks' deadline) stopped a statement that was still running. */
export const interruptedError = (cause: unknown): MiddyConnError =>
	new MiddyConnError(
		"The statement was stopped when the invocation timed out (or its background tasks reached their deadline); it may or may not have been applied, and an open transaction was rolled back",
		{ package: pkg, code: errorCodes.interrupted, cause },
	);
