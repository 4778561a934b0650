// A third party's API, as the examples talk to it: an HTTPS server (harness http-server.ts) with the endpoints the
// examples call, and the bookkeeping that tells whether every delivery arrived, and arrived once. Used by the
// demo and the soak.
//
//   POST /webhooks/orders   orders-api's background notification: 202.
//   POST /v1/events         webhook-relay's deliveries: 202; a body with `"flaky":true` is refused with a 503 the
//                           first time its idempotency key is seen (a transient failure that the relay reports and
//                           SQS redelivers), and accepted after.
//   POST /v1/audit          a plain endpoint for other callers (the soak's own requests): 202, and 401 without the
//                           bearer token when `auditToken` is set.
//
// A request is *processed* (counted in `accepted`) when the partner answers it with a 2xx, or starts to: that is
// the moment a real API would have acted on it. Deliveries are counted per key: the `idempotency-key` header, or
// `x-request-id`. A key processed twice is a duplicate.
//
// Faults, for the soak: the next request to a path, or the first request with a key, can be made to meet one
// (`failNext`, `failKey`): a reset before it is processed, a reset after it was processed (the answer is lost), an
// answer slower than the client waits (a request whose client gave up first is not processed), a body that stalls
// after the headers (processed), or an error status (not processed).
import { startHttpServer, type TestHttpServer } from "./http-server.ts";

export const ORDERS_WEBHOOK_PATH = "/webhooks/orders";
export const RELAY_EVENTS_PATH = "/v1/events";
export const AUDIT_PATH = "/v1/audit";

export type PartnerPath = typeof ORDERS_WEBHOOK_PATH | typeof RELAY_EVENTS_PATH | typeof AUDIT_PATH;

export type PartnerFault =
	/** TCP reset as soon as the request has arrived: not processed, no response byte. */
	| { kind: "reset" }
	/**
	 * Processed, and then the connection is reset before the answer goes out: the client cannot know whether it
	 * was. A retry of it is a second delivery, which only an idempotency key makes harmless.
	 */
	| { kind: "reset-after" }
	/** Answers after `ms`; if the client has given up by then, the request is not processed. */
	| { kind: "slow"; ms: number }
	/** Processed: the status and headers go out at once, the body `ms` later. */
	| { kind: "slow-body"; ms: number }
	/** Answered with this status (4xx or 5xx) and not processed. */
	| { kind: "refuse"; status: number };

export interface PartnerApiOptions {
	/** Idle keep-alive timeout of the partner's server (ms), as a load balancer in front of it would have. */
	keepAliveTimeout?: number;
	/**
	 * Tell clients the timeout with a `Keep-Alive` header. Default false: many load balancers close idle sockets
	 * without saying so, which is what leaves a frozen client holding dead connections.
	 */
	keepAliveHint?: boolean;
	/** Default true. */
	tls?: boolean;
	/** When set, POST /v1/audit requires `authorization: Bearer <auditToken>` (401 otherwise, not processed). */
	auditToken?: string;
}

export interface PartnerApi {
	readonly server: TestHttpServer;
	readonly origin: string;
	/** The partner's certificate (PEM), to trust with NODE_EXTRA_CA_CERTS or `connect.ca`. */
	readonly ca: string | undefined;
	/** Accepted (processed) deliveries per key, for one endpoint. */
	accepted(path: PartnerPath): ReadonlyMap<string, number>;
	/** Requests that reached the endpoint per key, processed or not (retries and refusals included). */
	received(path: PartnerPath): ReadonlyMap<string, number>;
	/** Requests processed whose answer was then lost (a `reset-after` fault), per key. */
	unanswered(path: PartnerPath): ReadonlyMap<string, number>;
	/** Idempotency keys of the relay deliveries refused with a 503 for `"flaky":true` (each once). */
	readonly refused: ReadonlySet<string>;
	/** The most TCP connections the partner had open when a request arrived. */
	readonly peakOpenAtRequest: number;
	/** The next request to `path` meets `fault`. */
	failNext(path: PartnerPath, fault: PartnerFault): void;
	/** The first request carrying `key` meets `fault` (a retry of it, with the same key, does not). */
	failKey(key: string, fault: PartnerFault): void;
	/** Forgets the faults that no request has met yet. */
	clearFaults(): void;
	close(): Promise<void>;
}

export const startPartnerApi = async (options: PartnerApiOptions = {}): Promise<PartnerApi> => {
	const server = await startHttpServer({
		tls: options.tls ?? true,
		keepAliveTimeout: options.keepAliveTimeout ?? 5000,
		keepAliveHint: options.keepAliveHint ?? false,
	});
	const paths: PartnerPath[] = [ORDERS_WEBHOOK_PATH, RELAY_EVENTS_PATH, AUDIT_PATH];
	const accepted = new Map(paths.map((path) => [path, new Map<string, number>()]));
	const received = new Map(paths.map((path) => [path, new Map<string, number>()]));
	const unanswered = new Map(paths.map((path) => [path, new Map<string, number>()]));
	const nextFaults = new Map<PartnerPath, PartnerFault[]>();
	const keyFaults = new Map<string, PartnerFault>();
	const refused = new Set<string>();
	let peakOpenAtRequest = 0;

	const count = (counts: Map<PartnerPath, Map<string, number>>, path: PartnerPath, key: string) => {
		const perKey = counts.get(path) as Map<string, number>;
		perKey.set(key, (perKey.get(key) ?? 0) + 1);
	};
	const keyOf = (headers: Record<string, string | string[] | undefined>) =>
		String(headers["idempotency-key"] ?? headers["x-request-id"] ?? "");

	/** Serves one endpoint: bookkeeping and faults around `process`, which answers a request it processes. */
	const endpoint = (
		path: PartnerPath,
		process: (key: string, body: string, respond: (status: number) => void) => void,
	) => {
		server.route(path, (request, response, arrived) => {
			peakOpenAtRequest = Math.max(peakOpenAtRequest, server.stats.open);
			const key = keyOf(arrived.headers);
			count(received, path, key);
			if (path === AUDIT_PATH && options.auditToken) {
				if (arrived.headers.authorization !== `Bearer ${options.auditToken}`) {
					response.writeHead(401).end();
					return;
				}
			}
			const fault = keyFaults.get(key) ?? nextFaults.get(path)?.shift();
			keyFaults.delete(key);
			const gone = () => response.destroyed || request.socket.destroyed;
			const processNow = (respond: (status: number) => void) => {
				if (!gone()) process(key, arrived.body, respond);
			};
			const answer = (status: number) => response.writeHead(status).end();
			switch (fault?.kind) {
				case "reset":
					server.resetConnection(arrived.socketId);
					return;
				case "reset-after":
					processNow((status) => {
						if (status >= 200 && status < 300) count(unanswered, path, key);
						server.resetConnection(arrived.socketId);
					});
					return;
				case "refuse":
					answer(fault.status);
					return;
				case "slow": {
					const timer = setTimeout(() => processNow(answer), fault.ms);
					response.on("close", () => clearTimeout(timer));
					return;
				}
				case "slow-body":
					processNow((status) => {
						response.writeHead(status, { "content-type": "application/json" });
						response.flushHeaders();
						const timer = setTimeout(() => response.end("{}"), fault.ms);
						response.on("close", () => clearTimeout(timer));
					});
					return;
				default:
					processNow(answer);
			}
		});
	};

	endpoint(ORDERS_WEBHOOK_PATH, (key, _body, respond) => {
		count(accepted, ORDERS_WEBHOOK_PATH, key);
		respond(202);
	});
	endpoint(RELAY_EVENTS_PATH, (key, body, respond) => {
		if (body.includes('"flaky":true') && !refused.has(key)) {
			refused.add(key);
			respond(503);
			return;
		}
		count(accepted, RELAY_EVENTS_PATH, key);
		respond(202);
	});
	endpoint(AUDIT_PATH, (key, _body, respond) => {
		count(accepted, AUDIT_PATH, key);
		respond(202);
	});

	return {
		server,
		origin: server.origin,
		ca: server.ca,
		accepted: (path) => accepted.get(path) as Map<string, number>,
		received: (path) => received.get(path) as Map<string, number>,
		unanswered: (path) => unanswered.get(path) as Map<string, number>,
		refused,
		get peakOpenAtRequest() {
			return peakOpenAtRequest;
		},
		failNext(path, fault) {
			nextFaults.set(path, [...(nextFaults.get(path) ?? []), fault]);
		},
		failKey(key, fault) {
			keyFaults.set(key, fault);
		},
		clearFaults() {
			nextFaults.clear();
			keyFaults.clear();
		},
		close: () => server.close(),
	};
};
