// Tests serve a service with a few real handlers; every other method answers Internal.
import type { DescService } from '@bufbuild/protobuf';
import { PgfleetError } from '@pgfleet/core';
import type { ServiceImpl } from './server.js';

/** A handler for every method of `service` that throws: spread real handlers over it. */
export function unimplementedService<S extends DescService>(service: S): ServiceImpl<S> {
  const unused = (): never => {
    throw new PgfleetError('Internal', 'not used by this test');
  };
  return Object.fromEntries(service.methods.map((m) => [m.localName, unused])) as unknown as ServiceImpl<S>;
}
