import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Client } from "undici";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startHttpServer, type TestHttpServer } from "../src/http-server.ts";
import { startTcpProxy, type TcpProxy, type TcpProxyOptions } from "../src/tcp-proxy.ts";

const SOCKET_ERROR = { code: expect.stringMatching(/^(ECONNRESET|UND_ERR_SOCKET)$/) };

let server: TestHttpServer;
let proxy: TcpProxy;
let client: Client;

beforeAll(async () => {
	server = await startHttpServer();
});

afterAll(async () => {
	await server.close();
});

beforeEach(async () => {
	server.resetStats();
	proxy = await startTcpProxy({ host: "127.0.0.1", port: server.port });
	client = new Client(`http://${proxy.host}:${proxy.port}`);
});

afterEach(async () => {
	await client.destroy();
	await proxy.close();
});

async function get(path: string): Promise<number> {
	const response = await client.request({ method: "GET", path });
	await response.body.text();
	return response.statusCode;
}

async function post(path: string, body: string): Promise<number> {
	const response = await client.request({ method: "POST", path, body });
	await response.body.text();
	return response.statusCode;
}

describe("the TCP proxy", () => {
	it("forwards requests and responses, keeping one upstream connection per client connection", async () => {
		expect(await get("/json")).toBe(200);
		expect(await post("/echo", "x")).toBe(200);
		const response = await client.request({ method: "GET", path: "/large?bytes=2000000" });
		expect((await response.body.arrayBuffer()).byteLength).toBe(2_000_000);
		expect(proxy.stats).toMatchObject({ connections: 1, open: 1 });
		expect(server.stats.connections).toBe(1);
		expect(server.receivedCount("POST", "/echo")).toBe(1);
	});

	it("carries TLS end to end, untouched", async () => {
		const tlsServer = await startHttpServer({ tls: true });
		const tlsProxy = await startTcpProxy({ host: "127.0.0.1", port: tlsServer.port });
		const tlsClient = new Client(`https://127.0.0.1:${tlsProxy.port}`, { connect: { ca: tlsServer.ca } });
		try {
			const response = await tlsClient.request({ method: "GET", path: "/json" });
			expect(await response.body.json()).toEqual({ ok: true, socketId: 1 });
			expect(tlsServer.stats.tlsHandshakes).toBe(1);
		} finally {
			await tlsClient.destroy();
			await tlsProxy.close();
			await tlsServer.close();
		}
	});

	it("passes a reset from the server on to the client", async () => {
		await expect(get("/reset")).rejects.toMatchObject(SOCKET_ERROR);
	});

	it("passes the server closing an idle socket on to the client", async () => {
		await get("/json");
		const disconnected = once(client, "disconnect");
		server.closeIdleConnections();
		await disconnected;
		expect(await get("/json")).toBe(200);
		expect(proxy.stats.connections).toBe(2);
	});

	describe("after dropIdle(), like a NAT that forgot the flow", () => {
		it("resets the client's next write on the old connection and never forwards it", async () => {
			expect(await get("/json")).toBe(200);
			expect(proxy.dropIdle()).toBe(1);
			await expect(post("/echo", "must arrive at most once")).rejects.toMatchObject(SOCKET_ERROR);
			expect(proxy.stats.resets).toBe(1);
			expect(server.receivedCount("POST")).toBe(0);
		});

		it("tells the client nothing until it writes", async () => {
			await get("/json");
			let disconnected = false;
			client.once("disconnect", () => {
				disconnected = true;
			});
			proxy.dropIdle();
			// The upstream side is gone: wait until the server has seen its socket close.
			await expect.poll(() => server.stats.open).toBe(0);
			expect(disconnected).toBe(false);
			expect(proxy.stats.open).toBe(1);
		});

		it("serves new connections normally", async () => {
			await get("/json");
			proxy.dropIdle();
			await expect(post("/echo", "lost")).rejects.toMatchObject(SOCKET_ERROR);
			expect(await post("/echo", "delivered")).toBe(200);
			expect(proxy.stats.connections).toBe(2);
			expect(server.received.filter((r) => r.method === "POST").map((r) => r.body)).toEqual(["delivered"]);
		});

		it("leaves alone connections that were active more recently than asked", async () => {
			await get("/json");
			expect(proxy.dropIdle(60_000)).toBe(0);
			expect(await get("/json")).toBe(200);
			expect(proxy.stats.connections).toBe(1);
		});
	});

	it("resets every open connection on resetAll()", async () => {
		const hanging = get("/hang");
		await expect.poll(() => server.receivedCount("GET", "/hang")).toBe(1);
		proxy.resetAll();
		await expect(hanging).rejects.toMatchObject(SOCKET_ERROR);
		await expect.poll(() => server.stats.open).toBe(0);
	});

	it("can be closed twice", async () => {
		await get("/json");
		await proxy.close();
		await proxy.close();
		await expect(get("/json")).rejects.toMatchObject({
			code: expect.stringMatching(/^(ECONNREFUSED|UND_ERR_SOCKET)$/),
		});
	});

	describe("freeze() and freezeOn, like a path that goes silent", () => {
		// Raw TCP on both ends, to see exactly which bytes get through in each direction.
		let peer: Server;
		/** The peer's side of each connection, in arrival order, with what it received. */
		let accepted: Array<{ socket: Socket; received: string }>;
		let frozenProxy: TcpProxy | undefined;
		const clients: Socket[] = [];

		beforeAll(async () => {
			peer = createServer((socket) => {
				const connection = { socket, received: "" };
				accepted.push(connection);
				socket.setEncoding("utf8");
				socket.on("data", (chunk: string) => {
					connection.received += chunk;
				});
				socket.on("error", () => {});
			});
			await new Promise<void>((resolve) => peer.listen(0, "127.0.0.1", resolve));
		});

		afterAll(async () => {
			await new Promise<void>((resolve) => peer.close(() => resolve()));
		});

		beforeEach(() => {
			accepted = [];
		});

		afterEach(async () => {
			for (const socket of clients.splice(0)) socket.destroy();
			await frozenProxy?.close();
			frozenProxy = undefined;
			for (const { socket } of accepted) socket.destroy();
		});

		const start = async (options?: TcpProxyOptions): Promise<TcpProxy> => {
			frozenProxy = await startTcpProxy(
				{ host: "127.0.0.1", port: (peer.address() as AddressInfo).port },
				options,
			);
			return frozenProxy;
		};

		/** A client connection through the proxy: what it received, whether it closed, and its peer's side. */
		const dial = async (through: TcpProxy) => {
			const index = accepted.length;
			const socket = connect({ host: through.host, port: through.port });
			clients.push(socket);
			const client = {
				socket,
				received: "",
				closed: false,
				get server() {
					return accepted[index] as (typeof accepted)[number];
				},
			};
			socket.setEncoding("utf8");
			socket.on("data", (chunk: string) => {
				client.received += chunk;
			});
			socket.on("close", () => {
				client.closed = true;
			});
			socket.on("error", () => {});
			await once(socket, "connect");
			await expect.poll(() => accepted.length).toBe(index + 1);
			return client;
		};

		/** Sends one message each way and waits until both arrived. */
		const roundTrip = async (client: Awaited<ReturnType<typeof dial>>, message: string) => {
			const before = { up: client.server.received.length, down: client.received.length };
			client.socket.write(`up:${message}`);
			client.server.socket.write(`down:${message}`);
			await expect.poll(() => client.server.received.slice(before.up)).toBe(`up:${message}`);
			await expect.poll(() => client.received.slice(before.down)).toBe(`down:${message}`);
		};

		/** How long to wait before trusting that swallowed bytes are not merely late. */
		const SILENCE_MS = 150;

		it("swallows whatever either side sends on the open connections, and closes neither socket", async () => {
			const through = await start();
			const client = await dial(through);
			await roundTrip(client, "before");
			expect(through.freeze()).toBe(1);
			client.socket.write("up:after");
			client.server.socket.write("down:after");
			await sleep(SILENCE_MS);
			expect(client.server.received).toBe("up:before");
			expect(client.received).toBe("down:before");
			expect(client.closed).toBe(false);
			expect(client.server.socket.destroyed).toBe(false);
			expect(through.stats).toMatchObject({ connections: 1, resets: 0, open: 1 });
			// already frozen: nothing more to freeze
			expect(through.freeze()).toBe(0);
		});

		it("leaves connections opened after freeze() working: it froze only the ones open at the time", async () => {
			const through = await start();
			const old = await dial(through);
			through.freeze();
			const fresh = await dial(through);
			await roundTrip(fresh, "fresh");
			old.socket.write("up:old");
			await sleep(SILENCE_MS);
			expect(old.server.received).toBe("");
			expect(through.stats).toMatchObject({ connections: 2, open: 2 });
		});

		it("still passes on a socket closing, so that the peer of a connection given up on is not held", async () => {
			const through = await start();
			const client = await dial(through);
			through.freeze();
			let peerClosed = false;
			client.server.socket.on("close", () => {
				peerClosed = true;
			});
			client.socket.destroy();
			await expect.poll(() => peerClosed).toBe(true);
			await expect.poll(() => through.stats.open).toBe(0);
		});

		it("freezeOn freezes only the connection whose client sent a matching chunk, that chunk included", async () => {
			let matched = 0;
			const through = await start({
				freezeOn: (chunk) => {
					const hit = chunk.includes("FREEZE");
					if (hit) matched++;
					return hit;
				},
			});
			const matching = await dial(through);
			const other = await dial(through);
			await roundTrip(matching, "before");
			matching.socket.write("FREEZE");
			// once the proxy has seen it, what the server sends is swallowed too
			await expect.poll(() => matched).toBe(1);
			matching.socket.write("up:after");
			matching.server.socket.write("down:after");
			await roundTrip(other, "other");
			await sleep(SILENCE_MS);
			expect(matching.server.received).toBe("up:before");
			expect(matching.received).toBe("down:before");
			expect(matching.closed).toBe(false);
			expect(through.stats).toMatchObject({ connections: 2, resets: 0, open: 2 });
			// freeze() counts only the connection not yet frozen
			expect(through.freeze()).toBe(1);
		});
	});
});
