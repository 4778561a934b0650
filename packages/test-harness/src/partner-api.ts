// A third party's API, as the examples talk to it: an HTTPS server (harness http-server.ts) with the two endpoints
// the examples call, and the bookkeeping that tells whether every delivery arrived, and arrived once. Used by the
// demo and the soak.
//
//   POST /webhooks/orders   orders-api's background notification: 202.
//   POST /v1/events         webhook-relay's deliveries: 202; a body with `"flaky":true` is refused with a 503 the
//                           first time its idempotency key is seen (a transient failure that the relay reports and
//                           SQS redelivers), and accepted after.
//
// Deliveries are counted per idempotency key. A key seen twice with a 2xx answer is a duplicate.
import { startHttpServer, type TestHttpServer } from "./http-server.ts";

export const ORDERS_WEBHOOK_PATH = "/webhooks/orders";
export const RELAY_EVENTS_PATH = "/v1/events";

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
}

export interface PartnerApi {
	readonly server: TestHttpServer;
	readonly origin: string;
	/** The partner's certificate (PEM), to trust with NODE_EXTRA_CA_CERTS or `connect.ca`. */
	readonly ca: string | undefined;
	/** Accepted deliveries per idempotency key, for one endpoint. */
	accepted(path: typeof ORDERS_WEBHOOK_PATH | typeof RELAY_EVENTS_PATH): ReadonlyMap<string, number>;
	/** Idempotency keys of the relay deliveries refused with a 503 (each once). */
	readonly refused: ReadonlySet<string>;
	close(): Promise<void>;
}

export const startPartnerApi = async (options: PartnerApiOptions = {}): Promise<PartnerApi> => {
	const server = await startHttpServer({
		tls: options.tls ?? true,
		keepAliveTimeout: options.keepAliveTimeout ?? 5000,
		keepAliveHint: options.keepAliveHint ?? false,
	});
	const accepted = new Map<string, Map<string, number>>([
		[ORDERS_WEBHOOK_PATH, new Map()],
		[RELAY_EVENTS_PATH, new Map()],
	]);
	const refused = new Set<string>();
	const accept = (path: string, key: string) => {
		const counts = accepted.get(path) as Map<string, number>;
		counts.set(key, (counts.get(key) ?? 0) + 1);
	};
	const keyOf = (headers: Record<string, string | string[] | undefined>) =>
		String(headers["idempotency-key"] ?? "");

	server.route(ORDERS_WEBHOOK_PATH, (_request, response, received) => {
		accept(ORDERS_WEBHOOK_PATH, keyOf(received.headers));
		response.writeHead(202).end();
	});
	server.route(RELAY_EVENTS_PATH, (_request, response, received) => {
		const key = keyOf(received.headers);
		if (received.body.includes('"flaky":true') && !refused.has(key)) {
			refused.add(key);
			response.writeHead(503, { "retry-after": "1" }).end();
			return;
		}
		accept(RELAY_EVENTS_PATH, key);
		response.writeHead(202).end();
	});

	return {
		server,
		origin: server.origin,
		ca: server.ca,
		accepted: (path) => accepted.get(path) as Map<string, number>,
		refused,
		close: () => server.close(),
	};
};
