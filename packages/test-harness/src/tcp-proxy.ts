import { type AddressInfo, connect, createServer, type Socket } from "node:net";

export interface TcpProxyTarget {
	host: string;
	port: number;
}

/** Live counters: they change as the proxy works. */
export interface TcpProxyStats {
	/** Client connections accepted. */
	connections: number;
	/** Client connections reset because they wrote after being dropped. */
	resets: number;
	/** Client connections open right now, dropped or not. */
	readonly open: number;
}

export interface TcpProxyOptions {
	/**
	 * Freezes a connection (see `TcpProxy.freeze()`) as soon as its client sends a chunk this returns true for,
	 * that chunk included: it is never forwarded. For a path that goes silent at one exact step of a protocol
	 * (say, right after the handshake), which a test could not hit by calling `freeze()` at the right moment.
	 * Only that connection is frozen. A chunk is what one read returned, so match something the client sends in
	 * one write.
	 */
	freezeOn?: (clientChunk: Buffer) => boolean;
}

/**
 * A TCP proxy on 127.0.0.1 that forwards bytes both ways, and can play a NAT gateway or firewall that forgets
 * a flow (the client is told nothing until it writes, and then gets a reset), or a network path that goes
 * silent (nothing gets through, nothing is closed).
 */
export interface TcpProxy {
	readonly host: string;
	readonly port: number;
	readonly stats: TcpProxyStats;
	/**
	 * Silently drops every open connection that has been idle for at least `idleForMs` (default 0: all of them),
	 * like a NAT that forgot the flow. Neither side is sent anything now. The upstream socket is closed
	 * quietly; the next bytes the client writes are never forwarded, and the client socket is reset (RST,
	 * ECONNRESET on the client). New connections work normally. Returns how many connections were dropped.
	 */
	dropIdle(idleForMs?: number): number;
	/**
	 * Freezes every connection open now: from then on, whatever either side sends is read and swallowed, and
	 * neither socket is closed or reset. This is a path that goes silent, as when Lambda freezes the execution
	 * environment mid-exchange or a NAT black-holes a flow without a reset: the client sees no error, only no
	 * answer, and must notice by its own timeouts. Bytes already forwarded still arrive. A socket that closes on
	 * one side still closes (or resets) the other, so that a client giving up on a frozen connection does not
	 * leave the server holding it until `close()`. Connections opened afterwards are not frozen: the path works
	 * again for them. Returns how many connections were frozen (not counting ones already frozen or dropped).
	 */
	freeze(): number;
	/** Resets (RST) every open connection now, on both sides. */
	resetAll(): void;
	/** Destroys every socket and stops listening. Safe to call more than once. */
	close(): Promise<void>;
}

interface Flow {
	client: Socket;
	upstream: Socket;
	dropped: boolean;
	/** Bytes either way are swallowed: see `TcpProxy.freeze()`. */
	frozen: boolean;
	lastActivity: number;
}

export async function startTcpProxy(
	target: TcpProxyTarget,
	options: TcpProxyOptions = {},
): Promise<TcpProxy> {
	/** Flows whose client socket is still open. */
	const flows = new Set<Flow>();
	/** Every socket not yet closed, for `close()`. */
	const sockets = new Set<Socket>();
	const stats: TcpProxyStats = {
		connections: 0,
		resets: 0,
		get open() {
			return flows.size;
		},
	};

	const track = (socket: Socket): void => {
		sockets.add(socket);
		socket.on("close", () => sockets.delete(socket));
	};

	const freeze = (flow: Flow): void => {
		flow.frozen = true;
		// A side paused for backpressure would otherwise hold its bytes in the kernel: read them, to swallow them.
		flow.client.resume();
		flow.upstream.resume();
	};

	const server = createServer((client) => {
		stats.connections++;
		const upstream = connect({ host: target.host, port: target.port });
		const flow: Flow = { client, upstream, dropped: false, frozen: false, lastActivity: Date.now() };
		flows.add(flow);
		track(client);
		track(upstream);

		client.on("data", (chunk: Buffer) => {
			if (flow.dropped) {
				// The NAT has no entry for this flow any more: the bytes go nowhere and the client gets a reset.
				stats.resets++;
				reset(client);
				return;
			}
			if (!flow.frozen && options.freezeOn?.(chunk)) freeze(flow);
			// The path is silent: the bytes were read, and go nowhere.
			if (flow.frozen) return;
			flow.lastActivity = Date.now();
			if (!upstream.write(chunk)) client.pause();
		});
		upstream.on("drain", () => client.resume());
		upstream.on("data", (chunk: Buffer) => {
			if (flow.dropped || flow.frozen) return;
			flow.lastActivity = Date.now();
			if (!client.write(chunk)) upstream.pause();
		});
		client.on("drain", () => upstream.resume());

		client.on("end", () => {
			if (flow.dropped) client.destroy();
			else upstream.end();
		});
		upstream.on("end", () => {
			if (!flow.dropped) client.end();
		});
		// A reset (or refused connection) on one side becomes a reset on the other.
		client.on("error", () => reset(upstream));
		upstream.on("error", () => {
			if (!flow.dropped) reset(client);
		});
		client.on("close", () => {
			flows.delete(flow);
			if (flow.dropped) upstream.destroy();
		});
	});

	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => {
			server.off("error", reject);
			resolve();
		});
	});
	const { port } = server.address() as AddressInfo;

	let closing: Promise<void> | undefined;

	return {
		host: "127.0.0.1",
		port,
		stats,
		dropIdle(idleForMs = 0) {
			const now = Date.now();
			let dropped = 0;
			for (const flow of flows) {
				if (flow.dropped || now - flow.lastActivity < idleForMs) continue;
				flow.dropped = true;
				dropped++;
				flow.upstream.destroy();
				// Keep reading, so that the client's next write is seen (and answered with a reset).
				flow.client.resume();
			}
			return dropped;
		},
		freeze() {
			let frozen = 0;
			for (const flow of flows) {
				if (flow.dropped || flow.frozen) continue;
				freeze(flow);
				frozen++;
			}
			return frozen;
		},
		resetAll() {
			for (const flow of flows) {
				reset(flow.client);
				reset(flow.upstream);
			}
		},
		close() {
			closing ??= new Promise<void>((resolve) => {
				for (const socket of sockets) socket.destroy();
				server.close(() => resolve());
			});
			return closing;
		},
	};
}

/** Closes a socket with a TCP RST rather than a FIN. */
function reset(socket: Socket): void {
	if (socket.destroyed) return;
	if (socket.connecting) {
		socket.destroy();
		return;
	}
	socket.resetAndDestroy();
}
