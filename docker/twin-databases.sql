-- The gateways' databases of docker/compose.yml (docker/loopback.sh makes them itself).
CREATE DATABASE twin_a;
CREATE DATABASE twin_b;
