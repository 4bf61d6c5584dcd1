// The kubelet volume helpers live with the tools (bench:tls uses them too).
export * from '../../scripts/kubelet-volume.js';
