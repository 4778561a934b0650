import {
	createServer as createHttpServer,
	type IncomingHttpHeaders,
	type IncomingMessage,
	type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Server as NetServer, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { createSelfSignedCertificate } from "./tls-certificate.ts";

export interface HttpServerOptions {
	/** Serve HTTPS with a self-signed certificate made at test time (see `ca`). Default false. */
	tls?: boolean;
	/**
	 * How long (ms) the server keeps an idle keep-alive socket before closing it, like a peer or load
	 * balancer idle timeout. Exact: there is no hidden extra second as in Node's own timer. 0 never closes.
	 * Default 5000.
	 */
	keepAliveTimeout?: number;
	/**
	 * Advertise the timeout in a `Keep-Alive: timeout=<whole seconds>` response header, as Node does.
	 * Set false to close idle sockets without telling the client first. Default true.
	 */
	keepAliveHint?: boolean;
}

/** Live counters: they change as the server works. */
export interface HttpServerStats {
	/** TCP connections accepted. */
	connections: number;
	/** TLS handshakes completed (always 0 for plain HTTP). */
	tlsHandshakes: number;
	/** Requests whose headers arrived. */
	requests: number;
	/** TCP sockets open right now (not zeroed by `resetStats`). */
	readonly open: number;
}

/** A request whose body had fully arrived. */
export interface ReceivedRequest {
	method: string;
	/** The request target as sent: path and query string. */
	path: string;
	headers: IncomingHttpHeaders;
	body: string;
	/** Which TCP connection carried it: 1 for the first connection the server accepted, and so on. */
	socketId: number;
	/** `Date.now()` when the body had arrived. */
	at: number;
}

/** Called once the request body has arrived and been recorded; `req` has been read to its end. */
export type RouteHandler = (req: IncomingMessage, res: ServerResponse, received: ReceivedRequest) => void;

/**
 * A real HTTP/1.1 or HTTPS server on 127.0.0.1. Built-in routes (path and query string):
 * - `/json`: 200 `{"ok":true,"socketId":N}`
 * - `/echo`: 200 JSON `{method, path, headers, body}`
 * - `/status/<code>`: that status code
 * - `/slow?ms=N`: answers after N ms (default 1000)
 * - `/slow-body?ms=N`: sends the headers at once and the body after N ms (default 1000)
 * - `/hang`: reads the request and never answers
 * - `/reset`: resets the TCP connection (RST) before any response byte
 * - `/large?bytes=N`: a streamed body of N bytes (default 1 MiB)
 * - `/pattern?bytes=N`: a streamed body of N bytes (default 1 MiB) that `patternBytes(0, N)` reproduces, so that a
 *   client can check every byte and their order; with `&failAfter=M` the server sends M bytes of it (not all N
 *   announced in `content-length`) and then closes the connection: the body fails midway
 * - `/close`: answers with `Connection: close` and closes the socket
 * - anything else: 404
 * Every request is recorded in `received`, any method, with its body.
 */
export interface TestHttpServer {
	/** e.g. `https://127.0.0.1:41234` */
	readonly origin: string;
	readonly port: number;
	/** The server certificate (PEM) for clients to trust; undefined for plain HTTP. */
	readonly ca: string | undefined;
	readonly stats: HttpServerStats;
	/** Every request received, in arrival order. */
	readonly received: ReceivedRequest[];
	/** How many received requests match a method (any case) and a path prefix; both optional. */
	receivedCount(method?: string, pathPrefix?: string): number;
	/** Zeroes the counters (except `open`) and empties `received`. */
	resetStats(): void;
	/** Changes the idle keep-alive timeout; sockets idle now are judged by the new value from when they went idle. */
	setKeepAliveTimeout(ms: number): void;
	/** Closes every idle keep-alive socket now, as a load balancer does after its idle timeout. */
	closeIdleConnections(): void;
	/** Destroys every socket, busy or idle. */
	destroyAllSockets(): void;
	/**
	 * Resets (TCP RST) every connection, busy or idle, as a load balancer or a restarting peer does: the client
	 * learns it on its next read or write (ECONNRESET). Returns how many were reset.
	 */
	resetAllConnections(): number;
	/** Resets (TCP RST) one connection, by the `socketId` its requests were recorded with. False if it is gone. */
	resetConnection(socketId: number): boolean;
	/** Adds or replaces the handler for an exact path (no query string); it takes precedence over the built-ins. */
	route(path: string, handler: RouteHandler): void;
	/** Destroys every socket and stops listening. Safe to call more than once. */
	close(): Promise<void>;
}

/** One accepted TCP connection. */
interface Connection {
	id: number;
	/** The TCP socket: counted, and the one `resetAndDestroy()` works on. */
	raw: Socket;
	/** The socket HTTP runs on: `raw` for HTTP, the TLS socket once the handshake is done for HTTPS. */
	http: Socket | undefined;
	/** Requests started and not finished on this connection. */
	active: number;
	idleSince: number;
	idleTimer: NodeJS.Timeout | undefined;
}

const LARGE_CHUNK = Buffer.alloc(64 * 1024, "x");

export async function startHttpServer(options: HttpServerOptions = {}): Promise<TestHttpServer> {
	const tls = options.tls ?? false;
	const keepAliveHint = options.keepAliveHint ?? true;
	let keepAliveTimeout = checkTimeout(options.keepAliveTimeout ?? 5000);
	const certificate = tls ? await createSelfSignedCertificate() : undefined;

	const live = new Set<Connection>();
	const bySocket = new WeakMap<Socket, Connection>();
	/** HTTPS connections waiting for their handshake, by client address: the TLS socket is not the TCP socket. */
	const handshaking = new Map<string, Connection>();
	const routes = new Map<string, RouteHandler>();
	const received: ReceivedRequest[] = [];
	const stats: HttpServerStats = {
		connections: 0,
		tlsHandshakes: 0,
		requests: 0,
		get open() {
			return live.size;
		},
	};
	let nextId = 0;

	// Node's own keep-alive timer is off (0): it adds a hidden `keepAliveTimeoutBuffer` and always advertises
	// the timeout. The harness closes idle sockets itself, exactly on time, with or without the hint.
	const server: NetServer = certificate
		? createHttpsServer({ key: certificate.key, cert: certificate.cert, keepAliveTimeout: 0 }, onRequest)
		: createHttpServer({ keepAliveTimeout: 0 }, onRequest);

	server.on("connection", (raw: Socket) => {
		stats.connections++;
		const connection: Connection = {
			id: ++nextId,
			raw,
			http: undefined,
			active: 0,
			idleSince: Date.now(),
			idleTimer: undefined,
		};
		live.add(connection);
		bySocket.set(raw, connection);
		const address = addressOf(raw);
		raw.on("error", () => {});
		raw.on("close", () => {
			clearTimeout(connection.idleTimer);
			live.delete(connection);
			if (handshaking.get(address) === connection) handshaking.delete(address);
		});
		if (certificate) {
			handshaking.set(address, connection);
		} else {
			becomeIdle(connection, raw);
		}
	});

	server.on("secureConnection", (socket: TLSSocket) => {
		stats.tlsHandshakes++;
		const address = addressOf(socket);
		const connection = handshaking.get(address);
		handshaking.delete(address);
		if (!connection) {
			socket.destroy();
			return;
		}
		bySocket.set(socket, connection);
		becomeIdle(connection, socket);
	});
	// A client that rejects the certificate aborts the handshake; Node destroys the socket, nothing to do.
	server.on("tlsClientError", () => {});

	function onRequest(req: IncomingMessage, res: ServerResponse): void {
		stats.requests++;
		const connection = bySocket.get(req.socket);
		if (!connection) {
			req.socket.destroy();
			return;
		}
		connection.active++;
		clearTimeout(connection.idleTimer);
		res.on("close", () => {
			connection.active--;
			if (connection.active === 0 && connection.http && !connection.http.destroyed) {
				becomeIdle(connection, connection.http);
			}
		});
		if (keepAliveHint && keepAliveTimeout > 0) {
			res.setHeader("Keep-Alive", `timeout=${Math.floor(keepAliveTimeout / 1000)}`);
		}
		const chunks: Buffer[] = [];
		req.on("data", (chunk: Buffer) => chunks.push(chunk));
		req.on("error", () => {});
		req.on("end", () => {
			const request: ReceivedRequest = {
				method: req.method ?? "GET",
				path: req.url ?? "/",
				headers: req.headers,
				body: Buffer.concat(chunks).toString("utf8"),
				socketId: connection.id,
				at: Date.now(),
			};
			received.push(request);
			answer(req, res, request, connection);
		});
	}

	function answer(
		req: IncomingMessage,
		res: ServerResponse,
		request: ReceivedRequest,
		connection: Connection,
	): void {
		const url = new URL(request.path, "http://127.0.0.1");
		const custom = routes.get(url.pathname);
		if (custom) {
			custom(req, res, request);
			return;
		}
		if (url.pathname.startsWith("/status/")) {
			const code = Number(url.pathname.slice("/status/".length));
			if (Number.isInteger(code) && code >= 200 && code <= 599) {
				sendJson(res, code, { status: code });
			} else {
				sendJson(res, 400, { error: "status code must be 200 to 599" });
			}
			return;
		}
		switch (url.pathname) {
			case "/json":
				sendJson(res, 200, { ok: true, socketId: connection.id });
				return;
			case "/echo":
				sendJson(res, 200, {
					method: request.method,
					path: request.path,
					headers: request.headers,
					body: request.body,
				});
				return;
			case "/slow": {
				const ms = numberParam(url, "ms", 1000);
				const timer = setTimeout(() => sendJson(res, 200, { ok: true, ms }), ms);
				res.on("close", () => clearTimeout(timer));
				return;
			}
			case "/slow-body": {
				const ms = numberParam(url, "ms", 1000);
				res.writeHead(200, { "content-type": "application/json" });
				res.flushHeaders();
				const timer = setTimeout(() => res.end(JSON.stringify({ ok: true, ms })), ms);
				res.on("close", () => clearTimeout(timer));
				return;
			}
			case "/hang":
				return;
			case "/reset":
				connection.raw.resetAndDestroy();
				return;
			case "/large":
				sendLarge(res, numberParam(url, "bytes", 1024 * 1024));
				return;
			case "/pattern": {
				const bytes = numberParam(url, "bytes", 1024 * 1024);
				sendPattern(res, bytes, numberParam(url, "failAfter", bytes));
				return;
			}
			case "/close":
				res.removeHeader("Keep-Alive");
				res.setHeader("Connection", "close");
				sendJson(res, 200, { ok: true, socketId: connection.id });
				return;
			default:
				sendJson(res, 404, { error: "not found", path: request.path });
		}
	}

	/** The socket carries no request from now on: close it after the keep-alive timeout unless a request comes. */
	function becomeIdle(connection: Connection, httpSocket: Socket): void {
		connection.http = httpSocket;
		connection.idleSince = Date.now();
		armIdleTimer(connection);
	}

	function armIdleTimer(connection: Connection): void {
		clearTimeout(connection.idleTimer);
		connection.idleTimer = undefined;
		const socket = connection.http;
		if (keepAliveTimeout <= 0 || connection.active > 0 || !socket) return;
		const delay = Math.max(0, connection.idleSince + keepAliveTimeout - Date.now());
		connection.idleTimer = setTimeout(() => socket.destroy(), delay);
	}

	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => {
			server.off("error", reject);
			resolve();
		});
	});
	const { port } = server.address() as AddressInfo;

	function destroyAllSockets(): void {
		for (const connection of live) {
			clearTimeout(connection.idleTimer);
			connection.http?.destroy();
			connection.raw.destroy();
		}
	}

	function resetAllConnections(): number {
		let reset = 0;
		for (const connection of live) {
			clearTimeout(connection.idleTimer);
			if (connection.raw.destroyed) continue;
			connection.raw.resetAndDestroy();
			reset++;
		}
		return reset;
	}

	function resetConnection(socketId: number): boolean {
		for (const connection of live) {
			if (connection.id !== socketId || connection.raw.destroyed) continue;
			clearTimeout(connection.idleTimer);
			connection.raw.resetAndDestroy();
			return true;
		}
		return false;
	}

	let closing: Promise<void> | undefined;

	return {
		origin: `${tls ? "https" : "http"}://127.0.0.1:${port}`,
		port,
		ca: certificate?.cert,
		stats,
		received,
		receivedCount(method, pathPrefix) {
			const wanted = method?.toUpperCase();
			return received.filter(
				(request) =>
					(wanted === undefined || request.method === wanted) &&
					(pathPrefix === undefined || request.path.startsWith(pathPrefix)),
			).length;
		},
		resetStats() {
			stats.connections = 0;
			stats.tlsHandshakes = 0;
			stats.requests = 0;
			received.length = 0;
		},
		setKeepAliveTimeout(ms) {
			keepAliveTimeout = checkTimeout(ms);
			for (const connection of live) armIdleTimer(connection);
		},
		closeIdleConnections() {
			for (const connection of live) {
				if (connection.active === 0 && connection.http) connection.http.destroy();
			}
		},
		destroyAllSockets,
		resetAllConnections,
		resetConnection,
		route(path, handler) {
			routes.set(path, handler);
		},
		close() {
			closing ??= new Promise<void>((resolve) => {
				destroyAllSockets();
				server.close(() => resolve());
			});
			return closing;
		},
	};
}

function checkTimeout(ms: number): number {
	if (!Number.isFinite(ms) || ms < 0)
		throw new RangeError(`keepAliveTimeout must be a number >= 0, got ${ms}`);
	return ms;
}

function addressOf(socket: Socket): string {
	return `${socket.remoteAddress}:${socket.remotePort}`;
}

function numberParam(url: URL, name: string, fallback: number): number {
	const value = url.searchParams.get(name);
	const parsed = value === null ? fallback : Number(value);
	return Number.isFinite(parsed) && parsed >= 0 ? Math.floor(parsed) : fallback;
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
	if (status === 204 || status === 304) {
		res.writeHead(status);
		res.end();
		return;
	}
	const body = JSON.stringify(value);
	res.writeHead(status, {
		"content-type": "application/json",
		"content-length": Buffer.byteLength(body),
	});
	res.end(body);
}

/** Streams `bytes` bytes, waiting for the client to drain. */
function sendLarge(res: ServerResponse, bytes: number): void {
	res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes });
	let remaining = bytes;
	const writeMore = (): void => {
		while (remaining > 0) {
			if (res.destroyed) return;
			const size = Math.min(remaining, LARGE_CHUNK.length);
			remaining -= size;
			if (!res.write(LARGE_CHUNK.subarray(0, size))) {
				res.once("drain", writeMore);
				return;
			}
		}
		res.end();
	};
	writeMore();
}

/**
 * The bytes `/pattern` serves, from `offset` on: each 4-byte group is its own index (big-endian), so that a missing,
 * repeated or misplaced chunk changes the content.
 */
export function patternBytes(offset: number, length: number): Buffer {
	const out = Buffer.alloc(length);
	for (let i = 0; i < length; i++) {
		const at = offset + i;
		out[i] = (Math.floor(at / 4) >>> (8 * (3 - (at % 4)))) & 0xff;
	}
	return out;
}

/** Streams the pattern with a `content-length` of `bytes`, waiting for the client to drain; closes after `failAfter`. */
function sendPattern(res: ServerResponse, bytes: number, failAfter: number): void {
	res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes });
	const stop = Math.min(bytes, failAfter);
	let sent = 0;
	const writeMore = (): void => {
		while (sent < stop) {
			if (res.destroyed) return;
			const size = Math.min(stop - sent, LARGE_CHUNK.length);
			const chunk = patternBytes(sent, size);
			sent += size;
			const last = sent === stop;
			// Past `failAfter`: the bytes written so far reach the client, then the connection closes.
			const ok = res.write(chunk, last && stop < bytes ? () => res.socket?.destroy() : undefined);
			if (!ok && !last) {
				res.once("drain", writeMore);
				return;
			}
		}
		if (stop === bytes) res.end();
	};
	if (stop === 0 && bytes > 0) {
		res.write("", () => res.socket?.destroy());
		return;
	}
	writeMore();
}
