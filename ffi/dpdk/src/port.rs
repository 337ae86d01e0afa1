use crate::{dpdk_error, Burst, Error, Mempool, Result};
use std::ffi::{CStr, CString};

/// How to set a port up.
#[derive(Debug, Clone)]
pub struct PortConf {
    /// RX queues: one per worker.
    pub rx_queues: u16,
    /// TX queues: one per worker.
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Spread received packets over the RX queues by IP addresses and L4
    /// ports (only when there is more than one queue and the NIC can).
    pub rss: bool,
    /// Receive every frame, not only those for the port's MAC.
    pub promiscuous: bool,
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// The NIC's own counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped by the NIC because RX queues were full.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// RX failures for lack of mbufs.
    pub rx_nombuf: u64,
}

/// An ethdev port, found by its device name (PCI address or vdev name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    id: u16,
}

impl Port {
    /// Finds a probed port by device name: `0000:01:00.0`, `net_af_packet0`.
    pub fn by_name(name: &str) -> Result<Port> {
        let c = CString::new(name).map_err(|_| Error::Invalid("port name has NUL".into()))?;
        let mut id: u16 = 0;
        // SAFETY: valid C string and out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(Error::Invalid(format!(
                "no DPDK port named {name:?}: check the vdev/pci setting and that the device exists"
            )));
        }
        Ok(Port { id })
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    fn info(&self) -> Result<dpdk_sys::rte_eth_dev_info> {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_dev_info_get(self.id, &mut info) };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_dev_info_get", rc));
        }
        Ok(info)
    }

    /// The PMD's name, e.g. `net_af_packet`.
    pub fn driver(&self) -> String {
        match self.info() {
            Ok(info) if !info.driver_name.is_null() => {
                // SAFETY: driver_name is a static NUL-terminated string.
                unsafe { CStr::from_ptr(info.driver_name) }
                    .to_string_lossy()
                    .into_owned()
            }
            _ => String::from("?"),
        }
    }

    /// Configures queues (one RX and one TX per worker), RSS and descriptor
    /// rings. The port must be stopped.
    pub fn configure(&self, conf: &PortConf, pool: &Mempool) -> Result<()> {
        let info = self.info()?;
        if conf.rx_queues > info.max_rx_queues || conf.tx_queues > info.max_tx_queues {
            return Err(Error::Invalid(format!(
                "port {} ({}) supports {} RX / {} TX queues, {} / {} needed (one per worker): use fewer workers or a NIC with more queues",
                self.id,
                self.driver(),
                info.max_rx_queues,
                info.max_tx_queues,
                conf.rx_queues,
                conf.tx_queues
            )));
        }
        let mut eth_conf = dpdk_sys::rte_eth_conf::default();
        let wanted = u64::from(dpdk_sys::RTE_ETH_RSS_IP)
            | u64::from(dpdk_sys::RTE_ETH_RSS_TCP)
            | u64::from(dpdk_sys::RTE_ETH_RSS_UDP);
        let rss_hf = wanted & info.flow_type_rss_offloads;
        if conf.rss && conf.rx_queues > 1 && rss_hf != 0 {
            eth_conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            // A null key lets the PMD use its default (symmetric on most).
            eth_conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // SAFETY: valid port id and a fully initialised conf.
        let rc = unsafe {
            dpdk_sys::rte_eth_dev_configure(self.id, conf.rx_queues, conf.tx_queues, &eth_conf)
        };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_dev_configure", rc));
        }
        let (mut nb_rx, mut nb_tx) = (conf.rx_desc, conf.tx_desc);
        // SAFETY: valid port id and out-pointers.
        let rc =
            unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut nb_rx, &mut nb_tx) };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_dev_adjust_nb_rx_tx_desc", rc));
        }
        // SAFETY: valid port id.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(self.id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..conf.rx_queues {
            // SAFETY: configured port, queue index in range, valid pool; a
            // null rxconf selects the PMD's defaults.
            let rc = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    nb_rx,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if rc != 0 {
                return Err(dpdk_error("rte_eth_rx_queue_setup", rc));
            }
        }
        for q in 0..conf.tx_queues {
            // SAFETY: configured port, queue index in range; null txconf
            // selects the PMD's defaults.
            let rc = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(self.id, q, nb_tx, socket, std::ptr::null())
            };
            if rc != 0 {
                return Err(dpdk_error("rte_eth_tx_queue_setup", rc));
            }
        }
        if conf.promiscuous {
            // SAFETY: valid port id. Not every PMD supports it; the error
            // is not fatal because the port still receives frames for its MAC.
            let _ = unsafe { dpdk_sys::rte_eth_promiscuous_enable(self.id) };
        }
        Ok(())
    }

    pub fn start(&self) -> Result<()> {
        // SAFETY: valid, configured port id.
        let rc = unsafe { dpdk_sys::rte_eth_dev_start(self.id) };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_dev_start", rc));
        }
        Ok(())
    }

    pub fn stop(&self) -> Result<()> {
        // SAFETY: valid port id; stopping a stopped port is harmless.
        let rc = unsafe { dpdk_sys::rte_eth_dev_stop(self.id) };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_dev_stop", rc));
        }
        Ok(())
    }

    /// Closes the port (flushes pcap files, releases the device).
    pub fn close(&self) -> Result<()> {
        // SAFETY: valid port id, port stopped by the caller.
        let rc = unsafe { dpdk_sys::rte_eth_dev_close(self.id) };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_dev_close", rc));
        }
        Ok(())
    }

    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_macaddr_get(self.id, &mut addr) };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_macaddr_get", rc));
        }
        Ok(addr.addr_bytes)
    }

    pub fn set_mac(&self, mac: [u8; 6]) -> Result<()> {
        let mut addr = dpdk_sys::rte_ether_addr { addr_bytes: mac };
        // SAFETY: valid port id and address.
        let rc = unsafe { dpdk_sys::rte_eth_dev_default_mac_addr_set(self.id, &mut addr) };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_dev_default_mac_addr_set", rc));
        }
        Ok(())
    }

    /// Receives every frame whatever its destination MAC.
    pub fn enable_promiscuous(&self) -> Result<()> {
        // SAFETY: valid port id.
        let rc = unsafe { dpdk_sys::rte_eth_promiscuous_enable(self.id) };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_promiscuous_enable", rc));
        }
        Ok(())
    }

    /// Link state without waiting for autonegotiation.
    pub fn link(&self) -> Result<Link> {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.id, &mut link) };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_link_get_nowait", rc));
        }
        Ok(Link {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() != 0,
        })
    }

    pub fn stats(&self) -> Result<PortStats> {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: valid port id and out-pointer; safe from any thread.
        let rc = unsafe { dpdk_sys::rte_eth_stats_get(self.id, &mut s) };
        if rc != 0 {
            return Err(dpdk_error("rte_eth_stats_get", rc));
        }
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The RX side of queue `q`. Exactly one thread may own it.
    pub fn rx_queue(&self, q: u16) -> RxQueue {
        RxQueue {
            port: self.id,
            queue: q,
        }
    }

    /// The TX side of queue `q`. Exactly one thread may own it.
    pub fn tx_queue(&self, q: u16) -> TxQueue {
        TxQueue {
            port: self.id,
            queue: q,
        }
    }
}

/// A receive queue, owned by one worker.
pub struct RxQueue {
    port: u16,
    queue: u16,
}

impl RxQueue {
    /// Receives up to the burst's free room; returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let have = burst.len();
        let room = crate::BURST_MAX - have;
        if room == 0 {
            return 0;
        }
        // SAFETY: the slots from `have` on are uninitialised room for
        // `room` pointers; rx_burst writes at most `room` valid mbuf
        // pointers, which the burst then owns. One owner per queue.
        let n = unsafe {
            dpdk_sys::sluice_rx_burst(
                self.port,
                self.queue,
                burst.raw_slots().add(have),
                room as u16,
            )
        } as usize;
        burst.set_len(have + n);
        n
    }

    pub fn port_id(&self) -> u16 {
        self.port
    }
}

/// A transmit queue, owned by one worker.
pub struct TxQueue {
    port: u16,
    queue: u16,
}

impl TxQueue {
    /// Hands the burst to the NIC. Mbufs the NIC did not take stay in the
    /// burst (at its front) so the caller decides: retry or free and count.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        if burst.is_empty() {
            return 0;
        }
        // SAFETY: the first len slots are valid owned mbufs; the NIC takes
        // ownership of the first `n` returned, which the burst forgets.
        let n = unsafe {
            dpdk_sys::sluice_tx_burst(self.port, self.queue, burst.raw_slots(), burst.len() as u16)
        } as usize;
        burst.consume_front(n);
        n
    }

    pub fn port_id(&self) -> u16 {
        self.port
    }
}
