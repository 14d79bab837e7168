export * from './errors';
export * from './gpu/index';
