// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title CPX escrow with consumer-signed spending and cumulative claims.
/// @notice Trust model: the operator's hot key can move escrow only where a consumer signed for it.
///
/// Money. Every unit in the contract is in exactly one place: a consumer's `escrow`, the common `pot`
/// (debited, not yet claimed) or a payee's `parked` balance (a claim whose push payment failed).
///     balance == sum(escrow) + pot + sum(parked)
/// Every function moves an amount between two of those places after a checked subtraction.
///
/// Orders (EIP-712, domain "CPX Settlement" v2, chain id, this contract). A consumer signs one order per
/// job: job hash, the job's maximum amount, the running total of its orders' maximums (`cumulativeMax`),
/// a nonce (one more per order) and a deadline. A commit debits a consumer only by presenting one of
/// its orders, signed, unexpired, not older than the newest order already used, and only while the
/// consumer's lifetime debits stay within that order's `cumulativeMax`. So every unit debited is covered
/// by a signed order and no order's allowance is ever spent twice: presenting an order again (in the
/// same or a later batch) can only spend what is left of the total the consumer signed for.
///
/// Cumulative claims. Each commit carries, for every payee of the batch, its cumulative earnings to date
/// (payee, cumulative) as calldata; the contract builds the Merkle root itself from that calldata, so
/// whatever root is stored was published in full on chain (anyone can rebuild every proof from the
/// commit transactions). A payee claims `cumulative - claimed[payee]` with a proof against any batch's
/// root: one claim pays any number of batches and leases. Claims never expire and work while paused.
///
/// No freeze. A consumer's escrow can be withdrawn by the consumer alone (`reclaim`) once its reclaim
/// window has passed since its last deposit or its last debit under a NEW order (the operator re-using
/// an old order does not move the clock). The window is the one in force at the consumer's last deposit:
/// admin changes apply to escrow deposited afterwards only. Admin changes (operator, window, admin) wait
/// ADMIN_DELAY; revoking the operator and pausing take effect at once because they only stop money
/// coming in (deposits, commits), never money going out.
///
/// Round commitments (the match on chain, after Du et al. 2023). The auctions clear off chain; for each
/// cleared round the operator commits the sha256 of its published snapshot and of its result, alone
/// (`commitRounds`) or in the same transaction as a settlement batch (`commitBatchWithRounds`). A round
/// id is written once: no function, the admin's included, can change or delete a commitment, so anyone
/// can replay the published snapshot later and compare it with what the operator said at the time.
/// Storage is one slot per round (keccak256 of the two hashes); the hashes themselves are in the
/// `RoundCommitted` event. The worst the operator key can do is commit hashes a replay will not
/// reproduce (or squat round ids not cleared yet): a permanent, signed, public mismatch, never a silent
/// change of history. Pausing or revoking the operator stops it at once.
contract SettlementV2 is ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice One consumer's signed order and the amount a commit debits under it.
    struct Debit {
        address consumer;
        bytes32 jobHash;
        uint256 maxAmount;
        uint256 cumulativeMax;
        uint64 nonce;
        uint64 deadline;
        uint256 amount;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice A payee's cumulative earnings (provider payments, platform fees, consumer refunds) to date.
    struct Credit {
        address payee;
        uint256 cumulative;
    }

    /// @dev One slot per consumer: a debit is one SSTORE.
    struct Account {
        uint96 escrow;
        uint96 debited;
        uint32 nonce;
        uint32 lastActivity;
    }

    /// @notice A cleared round: its id in CPX and the sha256 of its canonical snapshot and result.
    struct RoundHashes {
        uint64 roundId;
        bytes32 snapshotHash;
        bytes32 resultHash;
    }

    struct Pending {
        address operator;
        uint64 operatorEta;
        uint32 window;
        uint64 windowEta;
        address admin;
        uint64 adminEta;
    }

    bytes32 public constant ORDER_TYPEHASH = keccak256(
        "Order(address consumer,bytes32 jobHash,uint256 maxAmount,uint256 cumulativeMax,uint64 nonce,uint64 deadline)"
    );
    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    uint64 public constant ADMIN_DELAY = 2 days;
    uint32 public constant MIN_WINDOW = 1 days;
    uint32 public constant MAX_WINDOW = 365 days;

    /// @notice The escrowed asset; address(0) means the chain's native currency.
    IERC20 public immutable token;
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomain;
    address public admin;
    address public operator;
    bool public paused;
    /// @notice The reclaim window new deposits accept.
    uint32 public reclaimWindow;
    /// @notice Debited, not yet claimed.
    uint256 public pot;
    uint256 public batchCount;
    Pending public pending;

    mapping(address consumer => Account) private _accounts;
    mapping(address consumer => uint32) private _windowOf;
    mapping(bytes32 batchId => bytes32 root) public rootOf;
    mapping(address payee => uint256) public claimed;
    mapping(address payee => uint256) public parked;
    /// @notice keccak256(abi.encode(snapshotHash, resultHash)) per round id; zero: not committed.
    mapping(uint256 roundId => bytes32) public roundCommitment;

    event Deposited(address indexed consumer, uint256 amount, uint256 escrow);
    event Reclaimed(address indexed consumer, uint256 amount);
    event EscrowDebited(
        bytes32 indexed batchId, address indexed consumer, uint256 amount, uint256 nonce, bytes32 jobHash
    );
    event BatchCommitted(bytes32 indexed batchId, bytes32 root, uint256 debited, uint256 payees, uint256 index);
    event Claimed(address indexed payee, bytes32 indexed batchId, uint256 cumulative, uint256 amount);
    event Parked(address indexed payee, uint256 amount);
    event Withdrawn(address indexed payee, uint256 amount);
    event OperatorProposed(address operator, uint256 eta);
    event OperatorChanged(address operator);
    event WindowProposed(uint256 window, uint256 eta);
    event WindowChanged(uint256 window);
    event AdminProposed(address admin, uint256 eta);
    event AdminChanged(address admin);
    event PausedSet(bool paused);
    event RoundCommitted(uint256 indexed roundId, bytes32 snapshotHash, bytes32 resultHash);

    error ZeroAmount();
    error ValueMismatch(uint256 sent, uint256 expected);
    error NativeNotAccepted();
    error NotOperator();
    error NotAdmin();
    error AdminIsOperator();
    error IsPaused();
    error InvalidBatchId();
    error BatchAlreadySettled(bytes32 batchId);
    error EmptyBatch();
    error UnknownBatch(bytes32 batchId);
    error InvalidSignature(address consumer);
    error OrderExpired(address consumer, uint256 deadline);
    error OrderStale(address consumer, uint256 nonce, uint256 newest);
    error OrderExceeded(address consumer, uint256 debited, uint256 cumulativeMax);
    error InsufficientEscrow(address consumer, uint256 available, uint256 needed);
    error InvalidProof();
    error NothingToClaim(address payee);
    error PotExhausted(uint256 pot, uint256 needed);
    error ReclaimWindowOpen(address consumer, uint256 availableAt);
    error NothingToReclaim(address consumer);
    error InvalidWindow();
    error NothingPending();
    error TimelockActive(uint256 eta);
    error AmountTooLarge();
    error NativeTransferFailed(address to, uint256 amount);
    error EmptyRounds();
    error InvalidRound(uint256 roundId);
    error RoundAlreadyCommitted(uint256 roundId, bytes32 commitment);

    modifier onlyAdmin() {
        if (msg.sender != admin) revert NotAdmin();
        _;
    }

    constructor(IERC20 token_, address admin_, address operator_, uint32 reclaimWindow_) {
        if (admin_ == address(0) || admin_ == operator_) revert AdminIsOperator();
        if (reclaimWindow_ < MIN_WINDOW || reclaimWindow_ > MAX_WINDOW) revert InvalidWindow();
        token = token_;
        _cachedChainId = block.chainid;
        _cachedDomain = _buildDomain();
        admin = admin_;
        operator = operator_;
        reclaimWindow = reclaimWindow_;
        emit AdminChanged(admin_);
        emit OperatorChanged(operator_);
        emit WindowChanged(reclaimWindow_);
    }

    // ------------------------------------------------------------------ consumers

    /// @notice Put `amount` into the caller's escrow (native: send it as value; token: approve first).
    /// A token is credited by what the contract actually received (fee-on-transfer tokens stay solvent).
    /// The caller accepts the current reclaim window for all its escrow.
    function deposit(uint256 amount) external payable nonReentrant {
        if (paused) revert IsPaused();
        if (amount == 0) revert ZeroAmount();
        uint256 received = amount;
        if (address(token) == address(0)) {
            if (msg.value != amount) revert ValueMismatch(msg.value, amount);
        } else {
            if (msg.value != 0) revert NativeNotAccepted();
            uint256 before = token.balanceOf(address(this));
            token.safeTransferFrom(msg.sender, address(this), amount);
            received = token.balanceOf(address(this)) - before;
            if (received == 0) revert ZeroAmount();
        }
        Account storage account = _accounts[msg.sender];
        uint256 escrow = uint256(account.escrow) + received;
        if (escrow > type(uint96).max) revert AmountTooLarge();
        account.escrow = uint96(escrow);
        account.lastActivity = uint32(block.timestamp);
        if (_windowOf[msg.sender] != reclaimWindow) _windowOf[msg.sender] = reclaimWindow;
        emit Deposited(msg.sender, received, escrow);
    }

    /// @notice Withdraw the caller's whole escrow once its reclaim window has passed since its last deposit
    /// or its last debit under a new order. Works while paused and without any operator.
    function reclaim() external nonReentrant {
        Account storage account = _accounts[msg.sender];
        uint256 amount = account.escrow;
        if (amount == 0) revert NothingToReclaim(msg.sender);
        uint256 availableAt = uint256(account.lastActivity) + _windowOf[msg.sender];
        if (block.timestamp < availableAt) revert ReclaimWindowOpen(msg.sender, availableAt);
        account.escrow = 0;
        emit Reclaimed(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ------------------------------------------------------------------ operator

    /// @notice Debit consumers under their signed orders into the pot and publish the batch's payees with
    /// their cumulative earnings; the root is built here from `credits` (calldata order, sorted pairs).
    function commitBatch(bytes32 batchId, Debit[] calldata debits, Credit[] calldata credits) external {
        _liveOperator();
        _commitBatch(batchId, debits, credits);
    }

    /// @notice Commit cleared rounds' hashes, each round id once (the whole call reverts if any is taken).
    function commitRounds(RoundHashes[] calldata rounds) external {
        _liveOperator();
        if (rounds.length == 0) revert EmptyRounds();
        _commitRounds(rounds);
    }

    /// @notice `commitBatch` and `commitRounds` in one transaction (one base fee for both).
    function commitBatchWithRounds(
        bytes32 batchId,
        Debit[] calldata debits,
        Credit[] calldata credits,
        RoundHashes[] calldata rounds
    ) external {
        _liveOperator();
        _commitBatch(batchId, debits, credits);
        _commitRounds(rounds);
    }

    function _commitBatch(bytes32 batchId, Debit[] calldata debits, Credit[] calldata credits) private {
        if (batchId == bytes32(0)) revert InvalidBatchId();
        if (credits.length == 0) revert EmptyBatch();
        if (rootOf[batchId] != bytes32(0)) revert BatchAlreadySettled(batchId);
        uint256 total;
        for (uint256 i; i < debits.length; ++i) {
            total += _debit(batchId, debits[i]);
        }
        bytes32 root = creditsRoot(credits);
        rootOf[batchId] = root;
        pot += total;
        uint256 index = batchCount++;
        emit BatchCommitted(batchId, root, total, credits.length, index);
    }

    // ------------------------------------------------------------------ claims (anyone may relay)

    /// @notice Pay `payee` its cumulative earnings less what it was already paid.
    function claim(bytes32 batchId, address payee, uint256 cumulative, bytes32[] calldata proof)
        external
        nonReentrant
    {
        uint256 amount = _claim(batchId, payee, cumulative, proof);
        if (amount == 0) revert NothingToClaim(payee);
    }

    /// @notice Claim for several payees at once. A payee already paid up to its cumulative amount (for
    /// example by someone relaying its claim first) is skipped, not a reason to revert the rest.
    function claimMany(
        bytes32[] calldata batchIds,
        address[] calldata payees,
        uint256[] calldata cumulatives,
        bytes32[][] calldata proofs
    ) external nonReentrant returns (uint256 total) {
        for (uint256 i; i < payees.length; ++i) {
            total += _claim(batchIds[i], payees[i], cumulatives[i], proofs[i]);
        }
    }

    /// @notice Withdraw a payment that could not be pushed to the caller when its claim was made.
    function withdraw() external nonReentrant {
        uint256 amount = parked[msg.sender];
        if (amount == 0) revert NothingToClaim(msg.sender);
        parked[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ------------------------------------------------------------------ admin (timelocked)

    function proposeOperator(address operator_) external onlyAdmin {
        if (operator_ == admin) revert AdminIsOperator();
        uint64 eta = uint64(block.timestamp) + ADMIN_DELAY;
        pending.operator = operator_;
        pending.operatorEta = eta;
        emit OperatorProposed(operator_, eta);
    }

    function executeOperator() external onlyAdmin {
        _ripe(pending.operatorEta);
        operator = pending.operator;
        pending.operatorEta = 0;
        emit OperatorChanged(operator);
    }

    /// @notice Immediate: with no operator nothing can be debited; claims and reclaims go on.
    function revokeOperator() external onlyAdmin {
        operator = address(0);
        pending.operatorEta = 0;
        emit OperatorChanged(address(0));
    }

    function proposeWindow(uint32 window) external onlyAdmin {
        if (window < MIN_WINDOW || window > MAX_WINDOW) revert InvalidWindow();
        uint64 eta = uint64(block.timestamp) + ADMIN_DELAY;
        pending.window = window;
        pending.windowEta = eta;
        emit WindowProposed(window, eta);
    }

    /// @notice The new window applies to deposits made from now on; existing escrow keeps its window.
    function executeWindow() external onlyAdmin {
        _ripe(pending.windowEta);
        reclaimWindow = pending.window;
        pending.windowEta = 0;
        emit WindowChanged(reclaimWindow);
    }

    function proposeAdmin(address admin_) external onlyAdmin {
        if (admin_ == address(0) || admin_ == operator) revert AdminIsOperator();
        uint64 eta = uint64(block.timestamp) + ADMIN_DELAY;
        pending.admin = admin_;
        pending.adminEta = eta;
        emit AdminProposed(admin_, eta);
    }

    function executeAdmin() external onlyAdmin {
        _ripe(pending.adminEta);
        admin = pending.admin;
        pending.adminEta = 0;
        emit AdminChanged(admin);
    }

    /// @notice Immediate: a pause stops deposits and commits only; claims, withdrawals and reclaims go on.
    function setPaused(bool paused_) external onlyAdmin {
        paused = paused_;
        emit PausedSet(paused_);
    }

    // ------------------------------------------------------------------ views

    function orderDigest(
        address consumer,
        bytes32 jobHash,
        uint256 maxAmount,
        uint256 cumulativeMax,
        uint64 nonce,
        uint64 deadline
    ) public view returns (bytes32) {
        bytes32 structHash =
            keccak256(abi.encode(ORDER_TYPEHASH, consumer, jobHash, maxAmount, cumulativeMax, nonce, deadline));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// @notice EIP-712 domain: name "CPX Settlement", version "2", this chain's id (checked live, so a
    /// signature never carries over to a fork with another id) and this contract's address.
    function domainSeparator() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomain : _buildDomain();
    }

    function _buildDomain() private view returns (bytes32) {
        return keccak256(
            abi.encode(_DOMAIN_TYPEHASH, keccak256("CPX Settlement"), keccak256("2"), block.chainid, address(this))
        );
    }

    /// @notice keccak256(bytes.concat(keccak256(abi.encode(payee, cumulative)))) (double hash: a leaf can
    /// never pass for an inner node).
    function creditLeaf(address payee, uint256 cumulative) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(payee, cumulative))));
    }

    /// @notice The root over `credits` in the given order: each level pairs neighbours with the sorted-pair
    /// hash (OpenZeppelin's commutativeKeccak256); an odd last node moves up unchanged.
    function creditsRoot(Credit[] calldata credits) public pure returns (bytes32 root) {
        uint256 n = credits.length;
        bytes32[] memory level = new bytes32[](n);
        // Assembly: the same hashes as creditLeaf and commutativeKeccak256, in scratch space, without an
        // allocation per hash (this loop is most of a commit's gas per payee).
        assembly ("memory-safe") {
            let base := add(level, 0x20)
            let src := credits.offset
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let at := add(src, shl(6, i))
                if shr(160, calldataload(at)) { revert(0, 0) } // a dirty address would hash another leaf
                calldatacopy(0x00, at, 0x40)
                mstore(0x00, keccak256(0x00, 0x40))
                mstore(add(base, shl(5, i)), keccak256(0x00, 0x20))
            }
            for {} gt(n, 1) {} {
                let pairs := shr(1, n)
                for { let i := 0 } lt(i, pairs) { i := add(i, 1) } {
                    let a := mload(add(base, shl(6, i)))
                    let b := mload(add(base, add(shl(6, i), 0x20)))
                    switch lt(a, b)
                    case 1 {
                        mstore(0x00, a)
                        mstore(0x20, b)
                    }
                    default {
                        mstore(0x00, b)
                        mstore(0x20, a)
                    }
                    mstore(add(base, shl(5, i)), keccak256(0x00, 0x40))
                }
                if and(n, 1) { mstore(add(base, shl(5, pairs)), mload(add(base, shl(5, sub(n, 1))))) }
                n := add(pairs, and(n, 1))
            }
            root := mload(base)
        }
    }

    function escrowOf(address consumer)
        external
        view
        returns (uint256 escrow, uint256 debited, uint256 nonce, uint256 lastActivity, uint256 window)
    {
        Account storage account = _accounts[consumer];
        return (account.escrow, account.debited, account.nonce, account.lastActivity, _windowOf[consumer]);
    }

    // ------------------------------------------------------------------ internals

    function _debit(bytes32 batchId, Debit calldata d) private returns (uint256) {
        if (d.amount == 0) revert ZeroAmount();
        if (block.timestamp > d.deadline) revert OrderExpired(d.consumer, d.deadline);
        Account memory account = _accounts[d.consumer];
        if (d.nonce < account.nonce) revert OrderStale(d.consumer, d.nonce, account.nonce);
        bytes32 digest = orderDigest(d.consumer, d.jobHash, d.maxAmount, d.cumulativeMax, d.nonce, d.deadline);
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, d.v, d.r, d.s);
        if (err != ECDSA.RecoverError.NoError || signer != d.consumer) revert InvalidSignature(d.consumer);
        uint256 debited = uint256(account.debited) + d.amount;
        if (debited > d.cumulativeMax) revert OrderExceeded(d.consumer, debited, d.cumulativeMax);
        if (account.escrow < d.amount) revert InsufficientEscrow(d.consumer, account.escrow, d.amount);
        if (debited > type(uint96).max) revert AmountTooLarge();
        account.escrow -= uint96(d.amount);
        account.debited = uint96(debited);
        if (d.nonce > account.nonce) {
            // Only a new order (the consumer's own signature) moves the reclaim clock.
            account.nonce = uint32(d.nonce);
            account.lastActivity = uint32(block.timestamp);
        }
        _accounts[d.consumer] = account;
        emit EscrowDebited(batchId, d.consumer, d.amount, d.nonce, d.jobHash);
        return d.amount;
    }

    function _claim(bytes32 batchId, address payee, uint256 cumulative, bytes32[] calldata proof)
        private
        returns (uint256 amount)
    {
        bytes32 root = rootOf[batchId];
        if (root == bytes32(0)) revert UnknownBatch(batchId);
        if (!MerkleProof.verifyCalldata(proof, root, creditLeaf(payee, cumulative))) revert InvalidProof();
        uint256 paid = claimed[payee];
        if (cumulative <= paid) return 0;
        amount = cumulative - paid;
        uint256 available = pot;
        if (available < amount) revert PotExhausted(available, amount);
        pot = available - amount;
        claimed[payee] = cumulative;
        emit Claimed(payee, batchId, cumulative, amount);
        if (address(token) == address(0)) {
            // Push with bounded gas; a payee that refuses keeps the money parked for `withdraw`.
            (bool ok,) = payee.call{value: amount, gas: 30_000}("");
            if (!ok) {
                parked[payee] += amount;
                emit Parked(payee, amount);
            }
        } else {
            _sendTokenOrPark(payee, amount);
        }
    }

    function _sendTokenOrPark(address payee, uint256 amount) private {
        (bool ok, bytes memory data) = address(token).call(abi.encodeCall(IERC20.transfer, (payee, amount)));
        if (!ok || (data.length != 0 && !abi.decode(data, (bool)))) {
            parked[payee] += amount;
            emit Parked(payee, amount);
        }
    }

    function _send(address to, uint256 amount) private {
        if (address(token) == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert NativeTransferFailed(to, amount);
        } else {
            token.safeTransfer(to, amount);
        }
    }

    function _liveOperator() private view {
        if (msg.sender != operator) revert NotOperator();
        if (paused) revert IsPaused();
    }

    function _commitRounds(RoundHashes[] calldata rounds) private {
        for (uint256 i; i < rounds.length; ++i) {
            RoundHashes calldata r = rounds[i];
            if (r.roundId == 0 || r.snapshotHash == bytes32(0) || r.resultHash == bytes32(0)) {
                revert InvalidRound(r.roundId);
            }
            bytes32 taken = roundCommitment[r.roundId];
            // Write once: a second commit of an id (in this call or any later one) never lands.
            if (taken != bytes32(0)) revert RoundAlreadyCommitted(r.roundId, taken);
            roundCommitment[r.roundId] = keccak256(abi.encode(r.snapshotHash, r.resultHash));
            emit RoundCommitted(r.roundId, r.snapshotHash, r.resultHash);
        }
    }

    function _ripe(uint64 eta) private view {
        if (eta == 0) revert NothingPending();
        if (block.timestamp < eta) revert TimelockActive(eta);
    }
}
