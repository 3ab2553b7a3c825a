import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseSeriesQuery } from '../../worker/runtime/http';

const q = (query: string): ReturnType<typeof parseSeriesQuery> => parseSeriesQuery(new URLSearchParams(`scope=acme&statistic=open&granularity=hour&${query}`));

test('/v1/series: the total by default or as */*; a facet named * is asked for as **; any value of a real facet, * included', () => {
  assert.deepEqual(q(''), { scope: 'acme', statisticId: 'open', granularity: 'hour', facet: '*', value: '*' });
  assert.deepEqual(q('facet=*&value=*'), { scope: 'acme', statisticId: 'open', granularity: 'hour', facet: '*', value: '*' });
  assert.deepEqual(q('facet=**&value=*'), { scope: 'acme', statisticId: 'open', granularity: 'hour', facet: '**', value: '*' });
  assert.deepEqual(q('facet=color&value=*'), { scope: 'acme', statisticId: 'open', granularity: 'hour', facet: 'color', value: '*' });
  assert.match(q('facet=*&value=x') as string, /facet `\*` \(or no facet\) is the statistic's total.*written `\*\*`/);
  assert.match(q('value=x') as string, /is the statistic's total/);
  assert.match(q('facet=color') as string, /value is required with a facet/);
});
