// The independent Python peers fail a test at once, with their own stderr, when they exit
// before doing what the test waits for: no test times out on a peer that is gone.
import { describe, expect, it } from 'vitest';
import { runPythonConsumer, startPythonNode, whileConsumerRuns } from './helpers/python-peers.js';

describe('Python peers that exit early', () => {
  it('fail a wait on the consumer at once with its stderr when the consumer exits first', async () => {
    const consumer = runPythonConsumer({ target: '127.0.0.1:1', watch: ['alert:all'], tlsDir: '/nonexistent/tls' });
    const never = new Promise<never>(() => {});
    await expect(whileConsumerRuns(consumer, never)).rejects.toThrow(/the Python consumer exited with 1 .*No such file or directory: '\/nonexistent\/tls\/ca\.crt'/s);
  });

  it('fail the start of a node daemon with its stderr when the node exits before it listens', async () => {
    await expect(startPythonNode({ alert: [{ NoSuchField: 1 }] })).rejects.toThrow(/python_node exited with 1 before it listened: .*NoSuchField/s);
  });
});
