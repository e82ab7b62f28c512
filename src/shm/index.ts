export * from './shared-buffers';
export * from './ledger';
export * from './geometry';
export * from './domain';
