"""The line runtime: the daemon that watches the belt (daemon), frame sources (sources), box
tracking and lanes (decide), actuators and GPIO (actuators, gpio), systemd notification
(notify), the status page (status), the capture ring (capture) and the config (config,
edge.toml); binsort-edge.service is the unit that supervises it."""
