export * from './shared-buffers';
export * from './ledger';
export * from './geometry';
