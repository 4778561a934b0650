import { once } from "node:events";
import { Client } from "undici";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startHttpServer, type TestHttpServer } from "../src/http-server.ts";
import { startTcpProxy, type TcpProxy } from "../src/tcp-proxy.ts";

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
});
