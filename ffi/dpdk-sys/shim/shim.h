/* Exported wrappers for DPDK's static-inline fast-path functions, which are
 * absent from the shared libraries and therefore invisible to bindgen users. */
#ifndef SLUICE_DPDK_SHIM_H
#define SLUICE_DPDK_SHIM_H

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_cycles.h>
#include <rte_version.h>
#include <rte_bus_vdev.h>

uint16_t sluice_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t sluice_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
struct rte_mbuf *sluice_pktmbuf_alloc(struct rte_mempool *mp);
void sluice_pktmbuf_free(struct rte_mbuf *m);
int sluice_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void sluice_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count);
char *sluice_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
unsigned sluice_lcore_id(void);
int sluice_errno(void);
uint64_t sluice_rdtsc(void);
uint64_t sluice_tsc_hz(void);
unsigned sluice_mempool_avail_count(const struct rte_mempool *mp);
const char *sluice_version(void);

#endif
