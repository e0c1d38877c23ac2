/*
 * A QueryRoute answer for the SDK tests' fake brokers: `topic` with one read-write queue on
 * group g1, whose leader is 127.0.0.1:`port`.
 */
export function oneQueueRoute(topic: string, port: number): object {
  return {
    status: { code: 'OK', message: 'OK' },
    messageQueues: [
      {
        topic: { name: topic, resourceNamespace: '' },
        id: 0,
        permission: 'READ_WRITE',
        broker: {
          name: 'g1',
          id: 0,
          endpoints: { scheme: 'IPv4', addresses: [{ host: '127.0.0.1', port }] },
        },
      },
    ],
  };
}
