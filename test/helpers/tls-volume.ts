// The kubelet volume helpers live with the tools (bench:tls uses them too).
export * from '../../harness/kubelet-volume.js';
