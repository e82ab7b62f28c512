export * from './defs';
export * from './ring';
export * from './device-queue';
export * from './driver-queue';
export * from './chain';
export * from './net-hdr';
