// HTTP: the same warm invocation through each client a Lambda author could pick, against the HTTPS peer on
// loopback. Every contender is a middy handler, so the ratios compare the clients and the middleware, not middy.
import https from "node:https";
import tls from "node:tls";
import middy from "@middy/core";
import { Client, Pool } from "undici";
import { runIsolatedComparison } from "./isolated.ts";
import { invoker } from "./lambda.ts";
import { type HttpPoolModule, loadHttpPool } from "./middlewares.ts";
import type { HttpPeer } from "./peers.ts";
import type { ComparisonResult, Contender } from "./runner.ts";
import type { Mode } from "./settings.ts";

/** Connections per origin for every pooled contender (a warm sequential invocation uses one). */
const CONNECTIONS = 4;
const BACKGROUND_TASKS = 10;
const LARGE_BYTES = 64 * 1024;

interface Workload {
	id: string;
	title: string;
	path: string;
	/** Reads the whole body the way an author would for this payload and checks it. */
	kind: "json" | "bytes";
}

const SMALL: Workload = {
	id: "http-small",
	title: "HTTP, small JSON body (GET /json)",
	path: "/json",
	kind: "json",
};
const LARGE: Workload = {
	id: "http-large",
	title: "HTTP, 64 KiB body (GET /large?bytes=65536)",
	path: `/large?bytes=${LARGE_BYTES}`,
	kind: "bytes",
};

export const NAMES = {
	httpPool: "httpPool (middy)",
	barePool: "bare undici Pool (middy)",
	fetch: "fetch, default dispatcher (middy)",
	https: "node:https, keep-alive agent (middy)",
	newClient: "new undici Client per invocation (middy)",
	backgroundHttpPool: "httpPool + 10 waitUntil POSTs",
	backgroundAwaited: "bare Pool, 10 POSTs awaited in the handler",
} as const;

const check = (status: number, what: string) => {
	if (status !== 200) throw new Error(`${what}: HTTP ${status}`);
};

/** Reads an undici body completely (the connection goes back to the pool only then). */
const readUndiciBody = async (
	body: { json(): Promise<unknown>; arrayBuffer(): Promise<ArrayBuffer> },
	kind: Workload["kind"],
) => {
	if (kind === "json") return body.json();
	const bytes = await body.arrayBuffer();
	if (bytes.byteLength !== LARGE_BYTES) throw new Error(`short body: ${bytes.byteLength} bytes`);
	return bytes.byteLength;
};

const httpsGet = (agent: https.Agent, url: string): Promise<{ status: number; body: Buffer }> =>
	new Promise((resolve, reject) => {
		const request = https.get(url, { agent }, (response) => {
			const chunks: Buffer[] = [];
			response.on("data", (chunk: Buffer) => chunks.push(chunk));
			response.on("error", reject);
			response.on("end", () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks) }));
		});
		request.on("error", reject);
	});

const requestContenders = (
	peer: HttpArgs,
	workload: Workload,
	httpPool: HttpPoolModule | undefined,
): Contender[] => {
	const { origin, ca } = peer;
	const url = `${origin}${workload.path}`;
	const contenders: Contender[] = [];

	if (httpPool) {
		const handler = middy()
			.use(httpPool.httpPool({ origin, connections: CONNECTIONS, connect: { ca } }))
			.handler(async (_event: unknown, context) => {
				const { statusCode, body } = await context.http.request({ path: workload.path, method: "GET" });
				check(statusCode, NAMES.httpPool);
				return readUndiciBody(body, workload.kind);
			});
		contenders.push({
			name: NAMES.httpPool,
			note: "`context.http.request()` from `httpPool({ origin, connections: 4 })`",
			invoke: invoker(handler),
		});
	}

	const pool = new Pool(origin, { connections: CONNECTIONS, connect: { ca } });
	const bareHandler = middy(async () => {
		const { statusCode, body } = await pool.request({ path: workload.path, method: "GET" });
		check(statusCode, NAMES.barePool);
		return readUndiciBody(body, workload.kind);
	});
	contenders.push({
		name: NAMES.barePool,
		note: "a module-scope `new Pool(origin, { connections: 4 })`, same handler: the limit",
		invoke: invoker(bareHandler),
		teardown: () => pool.close(),
	});

	const fetchHandler = middy(async () => {
		const response = await fetch(url);
		check(response.status, NAMES.fetch);
		if (workload.kind === "json") return response.json();
		const bytes = await response.arrayBuffer();
		if (bytes.byteLength !== LARGE_BYTES) throw new Error(`short body: ${bytes.byteLength} bytes`);
		return bytes.byteLength;
	});
	contenders.push({
		name: NAMES.fetch,
		note: "global `fetch(url)`, Node's bundled undici and its global dispatcher",
		invoke: invoker(fetchHandler),
	});

	const agent = new https.Agent({ keepAlive: true, maxSockets: CONNECTIONS, ca });
	const httpsHandler = middy(async () => {
		const { status, body } = await httpsGet(agent, url);
		check(status, NAMES.https);
		if (workload.kind === "json") return JSON.parse(body.toString("utf8"));
		if (body.length !== LARGE_BYTES) throw new Error(`short body: ${body.length} bytes`);
		return body.length;
	});
	contenders.push({
		name: NAMES.https,
		note: "`https.get()` with a module-scope `new https.Agent({ keepAlive: true })`",
		invoke: invoker(httpsHandler),
		teardown: () => agent.destroy(),
	});

	const newClientHandler = middy(async () => {
		// The anti-pattern: a client made in the handler, so every invocation pays TCP + a full TLS handshake.
		const client = new Client(origin, { connect: { ca } });
		try {
			const { statusCode, body } = await client.request({ path: workload.path, method: "GET" });
			check(statusCode, NAMES.newClient);
			return await readUndiciBody(body, workload.kind);
		} finally {
			await client.close();
		}
	});
	contenders.push({
		name: NAMES.newClient,
		note: "`new Client(origin)` in the handler, closed at the end: TCP + TLS handshake every time",
		invoke: invoker(newClientHandler),
	});
	return contenders;
};

const backgroundContenders = (peer: HttpArgs, httpPool: HttpPoolModule | undefined): Contender[] => {
	const { origin, ca } = peer;
	const payload = JSON.stringify({ event: "order-viewed", id: 1 });
	const post = {
		path: "/echo",
		method: "POST" as const,
		body: payload,
		headers: { "content-type": "application/json" },
	};
	const contenders: Contender[] = [];

	if (httpPool) {
		const handler = middy()
			.use(httpPool.httpPool({ origin, connections: CONNECTIONS, connect: { ca } }))
			.handler(async (_event: unknown, context) => {
				for (let i = 0; i < BACKGROUND_TASKS; i++) {
					context.waitUntil(
						context.http.request(post).then(({ statusCode, body }) => {
							check(statusCode, NAMES.backgroundHttpPool);
							return body.dump();
						}),
					);
				}
				return { statusCode: 202 };
			});
		contenders.push({
			name: NAMES.backgroundHttpPool,
			note: "the handler returns at once; the middleware awaits the 10 tasks before the invocation returns",
			invoke: invoker(handler),
		});
	}

	const pool = new Pool(origin, { connections: CONNECTIONS, connect: { ca } });
	const awaitedHandler = middy(async () => {
		await Promise.all(
			Array.from({ length: BACKGROUND_TASKS }, () =>
				pool.request(post).then(({ statusCode, body }) => {
					check(statusCode, NAMES.backgroundAwaited);
					return body.dump();
				}),
			),
		);
		return { statusCode: 202 };
	});
	contenders.push({
		name: NAMES.backgroundAwaited,
		note: "the hand-written equivalent: `await Promise.all(posts)` before returning",
		invoke: invoker(awaitedHandler),
		teardown: () => pool.close(),
	});
	return contenders;
};

/** What a contender's process needs to build this group's contenders (isolated.ts). */
interface HttpArgs {
	origin: string;
	ca: string;
}

/** The contenders of one comparison of this group, as a contender's process builds them (isolated.ts). */
export const buildContenders = async (comparison: string, args: unknown): Promise<Contender[]> => {
	const peer = args as HttpArgs;
	// Node's fetch has no per-call CA: trust the peer's self-signed certificate process-wide, so that fetch runs
	// with its real default dispatcher. The other clients are given the CA explicitly as well.
	tls.setDefaultCACertificates([...tls.getCACertificates("default"), peer.ca]);
	const httpPool = (await loadHttpPool()).module;
	if (comparison === SMALL.id) return requestContenders(peer, SMALL, httpPool);
	if (comparison === LARGE.id) return requestContenders(peer, LARGE, httpPool);
	if (comparison === "http-background") return backgroundContenders(peer, httpPool);
	throw new Error(`no HTTP comparison ${comparison}`);
};

export const runHttpGroup = async (
	mode: Mode,
	peer: HttpPeer,
	httpPool: HttpPoolModule | undefined,
): Promise<ComparisonResult[]> => {
	const results: ComparisonResult[] = [];
	const reference = httpPool ? NAMES.httpPool : NAMES.barePool;
	const args: HttpArgs = { origin: peer.origin, ca: peer.ca };
	const here = new URL(import.meta.url);

	for (const [workload, budgetMs] of [
		[SMALL, 20_000],
		[LARGE, 15_000],
	] as const) {
		mode.log(`${workload.title}`);
		results.push(
			await runIsolatedComparison(
				here,
				mode,
				{
					id: workload.id,
					title: workload.title,
					description:
						"One warm invocation: a GET whose body is read to the end. Every contender runs in the same middy handler, each in a process of its own, the processes taking turns (see the overhead group); the reference is httpPool.",
					reference,
				},
				{ budgetMs, batch: 20 },
				args,
			),
		);
	}

	mode.log("HTTP, background work (10 POSTs per invocation)");
	results.push(
		await runIsolatedComparison(
			here,
			mode,
			{
				id: "http-background",
				title: "HTTP, background work: 10 POSTs per invocation, time until the invocation returns",
				description:
					"The work is delivered before the invocation returns in both contenders, each in a process of its own; the reference is the hand-written `await Promise.all`.",
				reference: NAMES.backgroundAwaited,
			},
			{ budgetMs: 10_000, batch: 10 },
			args,
		),
	);
	return results;
};
