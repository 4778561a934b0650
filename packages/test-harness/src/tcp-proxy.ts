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

/**
 * A TCP proxy on 127.0.0.1 that forwards bytes both ways, and can play a NAT gateway or firewall that forgets
 * a flow: the client is told nothing until it writes, and then gets a reset.
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
	/** Resets (RST) every open connection now, on both sides. */
	resetAll(): void;
	/** Destroys every socket and stops listening. Safe to call more than once. */
	close(): Promise<void>;
}

interface Flow {
	client: Socket;
	upstream: Socket;
	dropped: boolean;
	lastActivity: number;
}

export async function startTcpProxy(target: TcpProxyTarget): Promise<TcpProxy> {
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

	const server = createServer((client) => {
		stats.connections++;
		const upstream = connect({ host: target.host, port: target.port });
		const flow: Flow = { client, upstream, dropped: false, lastActivity: Date.now() };
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
			flow.lastActivity = Date.now();
			if (!upstream.write(chunk)) client.pause();
		});
		upstream.on("drain", () => client.resume());
		upstream.on("data", (chunk: Buffer) => {
			if (flow.dropped) return;
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
