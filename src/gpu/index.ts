export * from './device';
export * from './gpu';
export * from './pool';
