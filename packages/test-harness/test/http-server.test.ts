import { once } from "node:events";
import { Client } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { type HttpServerOptions, startHttpServer, type TestHttpServer } from "../src/http-server.ts";

const SOCKET_ERROR = { code: expect.stringMatching(/^(ECONNRESET|UND_ERR_SOCKET)$/) };

const servers: TestHttpServer[] = [];
const clients: Client[] = [];

async function server(options?: HttpServerOptions): Promise<TestHttpServer> {
	const started = await startHttpServer(options);
	servers.push(started);
	return started;
}

function client(target: TestHttpServer, options: Client.Options = {}): Client {
	const created = new Client(target.origin, { connect: { ca: target.ca }, ...options });
	clients.push(created);
	return created;
}

async function get(c: Client, path: string): Promise<{ statusCode: number; text: string }> {
	const response = await c.request({ method: "GET", path });
	return { statusCode: response.statusCode, text: await response.body.text() };
}

afterEach(async () => {
	await Promise.all(clients.splice(0).map((c) => c.destroy()));
	await Promise.all(servers.splice(0).map((s) => s.close()));
});

describe.each([
	{ name: "HTTP", tls: false },
	{ name: "HTTPS", tls: true },
])("the $name test server", ({ tls }) => {
	it("listens on 127.0.0.1 with the matching scheme", async () => {
		const s = await server({ tls });
		expect(s.origin).toBe(`${tls ? "https" : "http"}://127.0.0.1:${s.port}`);
		expect(s.ca === undefined).toBe(!tls);
	});

	it("counts one TCP connection for several keep-alive requests from one client", async () => {
		const s = await server({ tls });
		const c = client(s);
		for (let i = 0; i < 3; i++) {
			expect((await get(c, "/json")).statusCode).toBe(200);
		}
		expect(s.stats).toMatchObject({ connections: 1, requests: 3, open: 1, tlsHandshakes: tls ? 1 : 0 });
		expect(new Set(s.received.map((r) => r.socketId))).toEqual(new Set([1]));
	});

	it("counts a second connection when it closes the idle socket between two requests", async () => {
		const s = await server({ tls });
		const c = client(s);
		await get(c, "/json");
		const disconnected = once(c, "disconnect");
		s.closeIdleConnections();
		await disconnected;
		await get(c, "/json");
		expect(s.stats).toMatchObject({ connections: 2, requests: 2, tlsHandshakes: tls ? 2 : 0 });
		expect(s.received.map((r) => r.socketId)).toEqual([1, 2]);
	});

	it("resets the connection on /reset before any response byte", async () => {
		const s = await server({ tls });
		const c = client(s);
		await expect(get(c, "/reset")).rejects.toMatchObject(SOCKET_ERROR);
		expect(s.receivedCount("GET", "/reset")).toBe(1);
	});

	it("sends exactly the number of bytes asked of /large", async () => {
		const s = await server({ tls });
		const c = client(s);
		const bytes = 3 * 1024 * 1024 + 7;
		const response = await c.request({ method: "GET", path: `/large?bytes=${bytes}` });
		expect(response.headers["content-length"]).toBe(String(bytes));
		expect((await response.body.arrayBuffer()).byteLength).toBe(bytes);
	});
});

describe("the HTTPS test server", () => {
	it("has a certificate that a client must be told to trust", async () => {
		const s = await server({ tls: true });
		await get(client(s), "/json");
		const untrusting = new Client(s.origin);
		clients.push(untrusting);
		await expect(get(untrusting, "/json")).rejects.toMatchObject({
			code: expect.stringMatching(/^(DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)$/),
		});
		expect(s.stats).toMatchObject({ connections: 2, tlsHandshakes: 1, requests: 1 });
	});
});

describe("the test server's routes", () => {
	it("answers /json with a small JSON object", async () => {
		const s = await server();
		const response = await client(s).request({ method: "GET", path: "/json" });
		expect(response.headers["content-type"]).toBe("application/json");
		expect(await response.body.json()).toEqual({ ok: true, socketId: 1 });
	});

	it("echoes the method, path, headers and body on /echo", async () => {
		const s = await server();
		const response = await client(s).request({
			method: "POST",
			path: "/echo?x=1",
			headers: { "content-type": "text/plain", "x-test": "yes" },
			body: "hello",
		});
		expect(await response.body.json()).toMatchObject({
			method: "POST",
			path: "/echo?x=1",
			headers: { "x-test": "yes" },
			body: "hello",
		});
	});

	it("answers /status/<code> with that status", async () => {
		const s = await server();
		const c = client(s);
		expect((await get(c, "/status/503")).statusCode).toBe(503);
		expect((await get(c, "/status/204")).statusCode).toBe(204);
		expect((await get(c, "/status/201")).statusCode).toBe(201);
	});

	it("answers /slow after the delay and /slow-body with headers first", async () => {
		const s = await server();
		const c = client(s);
		expect(await get(c, "/slow?ms=50")).toEqual({ statusCode: 200, text: '{"ok":true,"ms":50}' });
		const response = await c.request({ method: "GET", path: "/slow-body?ms=50" });
		expect(response.statusCode).toBe(200);
		expect(await response.body.json()).toEqual({ ok: true, ms: 50 });
	});

	it("never answers /hang, so the client's headers timeout fires", async () => {
		const s = await server();
		const c = client(s, { headersTimeout: 200 });
		await expect(
			c.request({ method: "POST", path: "/hang", body: "waiting" }).then((r) => r.body.text()),
		).rejects.toMatchObject({ code: "UND_ERR_HEADERS_TIMEOUT" });
		expect(s.received).toMatchObject([{ method: "POST", path: "/hang", body: "waiting" }]);
	});

	it("answers /close with Connection: close and then closes the socket", async () => {
		const s = await server();
		const c = client(s);
		const disconnected = once(c, "disconnect");
		const response = await c.request({ method: "GET", path: "/close" });
		expect(response.headers.connection).toBe("close");
		expect(response.headers["keep-alive"]).toBeUndefined();
		await response.body.text();
		await disconnected;
		await get(c, "/json");
		expect(s.stats.connections).toBe(2);
	});

	it("answers unknown paths with 404", async () => {
		const s = await server();
		expect((await get(client(s), "/nowhere")).statusCode).toBe(404);
	});

	it("lets a test add its own route, which sees the recorded body", async () => {
		const s = await server();
		s.route("/custom", (_req, res, received) => {
			res.end(`got ${received.body}`);
		});
		const response = await client(s).request({ method: "PUT", path: "/custom", body: "abc" });
		expect(await response.body.text()).toBe("got abc");
	});
});

describe("the test server's record of requests", () => {
	it("records every request once its body has arrived, and counts by method and path prefix", async () => {
		const s = await server();
		const c = client(s, { pipelining: 10 });
		await Promise.all(
			Array.from({ length: 50 }, (_, i) =>
				c.request({ method: "POST", path: `/echo/${i}`, body: `body ${i}` }).then((r) => r.body.text()),
			),
		);
		await get(c, "/json");
		expect(s.receivedCount()).toBe(51);
		expect(s.receivedCount("post")).toBe(50);
		expect(s.receivedCount("POST", "/echo/1")).toBe(11);
		expect(s.receivedCount(undefined, "/json")).toBe(1);
		expect(s.received.find((r) => r.path === "/echo/7")?.body).toBe("body 7");
	});

	it("forgets counters and requests on resetStats, but keeps counting open sockets", async () => {
		const s = await server();
		const c = client(s);
		await get(c, "/json");
		s.resetStats();
		expect(s.stats).toMatchObject({ connections: 0, requests: 0, tlsHandshakes: 0, open: 1 });
		expect(s.received).toEqual([]);
		await get(c, "/json");
		expect(s.stats).toMatchObject({ connections: 0, requests: 1 });
	});
});

describe("the test server's keep-alive handling", () => {
	it("advertises its idle timeout in a Keep-Alive header by default", async () => {
		const s = await server();
		const response = await client(s).request({ method: "GET", path: "/json" });
		await response.body.text();
		expect(response.headers["keep-alive"]).toBe("timeout=5");
	});

	it("can close idle sockets without advertising the timeout", async () => {
		const s = await server({ keepAliveTimeout: 100, keepAliveHint: false });
		const c = client(s);
		const disconnected = once(c, "disconnect");
		const response = await c.request({ method: "GET", path: "/json" });
		await response.body.text();
		expect(response.headers["keep-alive"]).toBeUndefined();
		await disconnected;
		await expect.poll(() => s.stats.open).toBe(0);
		await get(c, "/json");
		expect(s.stats.connections).toBe(2);
	});

	it("applies a new idle timeout to sockets that are already idle", async () => {
		const s = await server({ keepAliveTimeout: 60_000 });
		const c = client(s);
		await get(c, "/json");
		const disconnected = once(c, "disconnect");
		s.setKeepAliveTimeout(50);
		await disconnected;
		await expect.poll(() => s.stats.open).toBe(0);
	});

	it("does not close a socket while it is busy with a request", async () => {
		const s = await server();
		const c = client(s, { headersTimeout: 30_000 });
		const slow = get(c, "/slow?ms=300");
		await expect.poll(() => s.receivedCount("GET", "/slow")).toBe(1);
		s.closeIdleConnections();
		s.setKeepAliveTimeout(10);
		expect((await slow).statusCode).toBe(200);
	});

	it("destroys busy sockets on destroyAllSockets and can be closed twice", async () => {
		const s = await server();
		const c = client(s);
		const hanging = get(c, "/hang");
		await expect.poll(() => s.receivedCount("GET", "/hang")).toBe(1);
		s.destroyAllSockets();
		await expect(hanging).rejects.toMatchObject(SOCKET_ERROR);
		await s.close();
		await s.close();
	});

	it("resets every connection on resetAllConnections: the client's next request on it fails", async () => {
		const s = await server({ tls: true });
		const c = client(s);
		await get(c, "/json");
		expect(s.stats.open).toBe(1);
		expect(s.resetAllConnections()).toBe(1);
		await expect.poll(() => s.stats.open).toBe(0);
		// undici's Client notices the reset (or the write fails); either way the next request opens a new connection
		await get(c, "/json").catch(() => get(c, "/json"));
		expect(s.stats.connections).toBe(2);
	});
});
